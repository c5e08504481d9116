"""When the times of single runs do not compare: runs started hours apart, or the same step
taking far longer in one run than in another on the same data and config."""

from __future__ import annotations

from datetime import datetime

from taxipipe.compare.runs import RunRow

#: A step whose time differs between two runs of the same data and config by more than this
#: factor and `NOISE_SECONDS` ran on a machine busier in one run than in the other.
NOISE_FACTOR = 1.5
NOISE_SECONDS = 1.0
#: Runs started further apart than this ran in different machine states.
APART_HOURS = 1.0


def timing_warnings(rows: list[RunRow]) -> list[str]:
    """Why the times of these single runs cannot be compared, if they cannot.

    Runs started hours apart, or the same step on the same data and config taking far longer
    in one run than in another, mean the machine's load differed between the runs: the wall
    times then rank the load, not the engines. Step times above the wall time come from a run
    recorded before reused steps were tagged.
    """
    found: list[str] = []
    started = [datetime.strptime(row.start_time, "%Y-%m-%d %H:%M") for row in rows]
    if len(rows) > 1 and (max(started) - min(started)).total_seconds() > APART_HOURS * 3600:
        first, last = started.index(min(started)) + 1, started.index(max(started)) + 1
        hours = (max(started) - min(started)).total_seconds() / 3600
        found.append(f"runs #{first} and #{last} started {hours:.1f} h apart, in different machine states: "
                     "their times do not compare")
    groups: dict[tuple[str, str], list[int]] = {}
    for number, row in enumerate(rows, 1):
        groups.setdefault((row.config_key, row.compute), []).append(number)
    for members in groups.values():
        spreads = []
        for step in {name for number in members for name in rows[number - 1].step_seconds}:
            timed = sorted((rows[n - 1].step_seconds[step], n) for n in members if step in rows[n - 1].step_seconds)
            (fast, quick), (slow, slowest) = timed[0], timed[-1]
            if slow > NOISE_FACTOR * fast and slow - fast > NOISE_SECONDS:
                spreads.append((slow - fast, step, fast, quick, slow, slowest))
        if spreads:
            _, step, fast, quick, slow, slowest = max(spreads)
            found.append(f"{step} took {fast:.1f} s in run #{quick} and {slow:.1f} s in #{slowest} on the same data "
                         "and config: the machine was busier during one of them, so the wall times rank the "
                         "load, not the engines")
    found += [f"run #{number}'s step times exceed its wall time: they include steps an earlier run did"
              for number, row in enumerate(rows, 1) if (row.overhead_seconds or 0.0) < 0]
    if found:
        found.append("to rank the engines, measure them in one session, several times each: "
                     "benchmarks/bench_engines.py (docs/engines.md)")
    return found
