"""Compare what each runner recorded in MLflow: one row per run, and a consistency check.

Every runner trains the same model on the same data and config, so runs that share the data
partition and the parameters must agree on RMSE; a difference beyond `RMSE_AGREEMENT` is a bug.
Each row also says what the run cost: its wall time (`taxipipe.walltime`), the sum of the times
of the steps that ran in that run (not those it reused, up to date or cached), and the
difference, the overhead of the engine that ran the steps. Single runs are noisy: `timing_warnings`
says when their times cannot be compared.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from taxipipe import tracking
from taxipipe.config import Settings
from taxipipe.layout import Home
from taxipipe.models.base import RMSE_AGREEMENT
from taxipipe.walltime import REUSED_TAG, WALL_METRIC

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STEP_METRIC = "step_seconds."
#: Column headers and values when the terminal is narrow.
SHORT_STEPS = {"extract": "extr", "validate_data": "vdata", "transform": "trans", "features": "feat",
               "validate_model": "vmod", "deploy": "depl", "cleanup": "clean"}
SHORT_KINDS = {"xgboost": "xgb", "linear": "lin", "random_forest": "rf"}
SHORT_FEATURES = {"categorical": "cat", "onehot": "1hot"}
SHORT_COMPUTE = {"memory": "mem", "external": "ext"}
#: The width of the tables when the output is no terminal and COLUMNS is unset.
DEFAULT_WIDTH = 100
#: A step whose time differs between two runs of the same data and config by more than this
#: factor and `NOISE_SECONDS` ran on a machine busier in one run than in the other.
NOISE_FACTOR = 1.5
NOISE_SECONDS = 1.0
#: Runs started further apart than this ran in different machine states.
APART_HOURS = 1.0


@dataclass
class RunRow:
    runner: str
    partition: str  # the training window: green/2021-01, or green/2023-01..2023-03
    kind: str
    feature_mode: str
    compute: str  # memory, external or dask
    rmse: float
    wall_seconds: float | None  # the whole run as its user waited for it (None: not recorded)
    steps_seconds: float  # the sum of the times of the steps that ran in this run
    overhead_seconds: float | None  # wall minus steps: what the engine added
    step_seconds: dict[str, float]
    run_id: str
    start_time: str
    champion: bool
    config_key: str = field(repr=False)
    reused_steps: list[str] = field(default_factory=list)  # up to date or cached: an earlier run's work


@dataclass(frozen=True)
class Column:
    """A column of a table: its header and values, and shorter ones for narrow terminals."""

    header: str
    short: str
    value: Callable[[int, RunRow], str]  # (row number, row) -> text
    compact: Callable[[int, RunRow], str] | None = None
    numeric: bool = False
    optional: bool = False  # left out first when the table does not fit


@dataclass
class Disagreement:
    partition: str
    kind: str
    feature_mode: str
    runs: dict[str, float]

    def describe(self) -> str:
        values = ", ".join(f"{run_id[:8]}={rmse:.6f}" for run_id, rmse in self.runs.items())
        return f"{self.partition} {self.kind} {self.feature_mode}: same data and config, RMSE differs ({values})"


def experiment_pattern(settings: Settings) -> re.Pattern[str]:
    """Names the configured experiment template gives, whatever the runner."""
    prefix, _, suffix = settings.mlflow.experiment_name.partition("{runner}")
    return re.compile(re.escape(prefix) + (".+" if _ else "") + re.escape(suffix) + "$")


def store_is_empty(settings: Settings) -> bool:
    """True when the embedded store has not been created yet (nothing to compare, nothing to open)."""
    return settings.mlflow.tracking_uri is None and not Home(settings.home).mlflow_store.exists()


def collect(settings: Settings, latest_only: bool = True) -> list[RunRow]:
    """The runs of every runner's experiment (`mlflow.experiment_name`) that finished training."""
    if store_is_empty(settings):
        return []
    client = tracking.client(settings)
    pattern = experiment_pattern(settings)
    experiments = [e for e in client.search_experiments() if pattern.match(e.name)]
    if not experiments:
        return []
    champion = tracking.champion_version(client, settings.mlflow.model_name)
    champion_run = champion.run_id if champion is not None else None
    rows: list[RunRow] = []
    seen: set[tuple[str, str, str, str]] = set()
    runs = client.search_runs([e.experiment_id for e in experiments], "metrics.rmse > 0",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        runner = tags.get("runner", "?")
        identity = (runner, tags.get("window", tags.get("partition", "?")), tags.get("model_kind", "xgboost"),
                    tags.get("feature_mode", "?"))
        if latest_only and identity in seen:
            continue
        seen.add(identity)
        reused = [step for step in tags.get(REUSED_TAG, "").split(",") if step]
        steps = {k[len(STEP_METRIC):]: v for k, v in metrics.items()
                 if k.startswith(STEP_METRIC) and k[len(STEP_METRIC):] not in reused}
        total, wall = round(sum(steps.values()), 3), metrics.get(WALL_METRIC)
        rows.append(RunRow(
            runner=runner, partition=identity[1], kind=identity[2], feature_mode=identity[3],
            compute=tags.get("compute", "memory"), rmse=metrics["rmse"], wall_seconds=wall,
            steps_seconds=total, overhead_seconds=None if wall is None else round(wall - total, 3),
            step_seconds=steps, run_id=run.info.run_id,
            start_time=datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M"),
            champion=run.info.run_id == champion_run,
            config_key=json.dumps(sorted(run.data.params.items())), reused_steps=reused,
        ))
    return sorted(rows, key=lambda row: (row.partition, row.kind, row.feature_mode, row.runner))


def disagreements(rows: list[RunRow]) -> list[Disagreement]:
    """Groups of runs with the same data and config whose RMSE spread exceeds RMSE_AGREEMENT."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.config_key, []).append(row)
    found = []
    for members in groups.values():
        scores = [row.rmse for row in members]
        if max(scores) - min(scores) > RMSE_AGREEMENT:
            found.append(Disagreement(members[0].partition, members[0].kind, members[0].feature_mode,
                                      {row.run_id: row.rmse for row in members}))
    return found


def champion_elsewhere(settings: Settings, rows: list[RunRow]) -> str | None:
    """Where the champion is when none of `rows` holds it (None when one does)."""
    if any(row.champion for row in rows):
        return None
    name = settings.mlflow.model_name
    client = tracking.client(settings)
    version = tracking.champion_version(client, name)
    if version is None:
        return f"no champion yet: no version of model {name} holds the alias '{tracking.CHAMPION}'"
    run = client.get_run(version.run_id)
    tags, started = run.data.tags, datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc)
    experiment = client.get_experiment(run.info.experiment_id).name
    where = ("an earlier run that `taxipipe compare --all` lists" if experiment_pattern(settings).match(experiment)
             else f"a run of experiment {experiment}")
    return (f"the champion ({name} version {version.version}) is {where}: run {run.info.run_id[:8]}, "
            f"{tags.get('runner', '?')}, {tags.get('window', tags.get('partition', '?'))}, "
            f"RMSE {run.data.metrics.get('rmse', float('nan')):.4f}, started {started:%Y-%m-%d %H:%M} UTC")


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


def table(rows: list[RunRow], width: int = DEFAULT_WIDTH, notes: Iterable[str] = ()) -> str:
    """The runs, then each run's step times in pipeline order (blank: not run; `reused`: an
    earlier run's), `width` wide, then the `notes`, wrapped."""
    from taxipipe.pipeline import STEP_NAMES

    colors = {row.partition.split("/")[0] for row in rows}
    runs = [
        Column("#", "#", lambda n, row: str(n), numeric=True),
        Column("runner", "runner", lambda n, row: row.runner),
        Column("window", "window", lambda n, row: row.partition,
               lambda n, row: compact_window(row.partition, drop_color=len(colors) == 1)),
        Column("kind", "kind", lambda n, row: row.kind, lambda n, row: SHORT_KINDS.get(row.kind, row.kind)),
        Column("features", "feat", lambda n, row: row.feature_mode,
               lambda n, row: SHORT_FEATURES.get(row.feature_mode, row.feature_mode)),
        Column("compute", "comp", lambda n, row: row.compute,
               lambda n, row: SHORT_COMPUTE.get(row.compute, row.compute)),
        Column("RMSE", "RMSE", lambda n, row: f"{row.rmse:.4f}", numeric=True),
        Column("wall s", "wall", lambda n, row: _seconds(row.wall_seconds), numeric=True),
        Column("overhead s", "ovh", lambda n, row: _seconds(row.overhead_seconds), numeric=True),
        Column("champion", "champ", lambda n, row: "🏆 champion" if row.champion else "",
               lambda n, row: "🏆" if row.champion else ""),
        Column("run id", "run id", lambda n, row: row.run_id[:8], optional=True),
        Column("started (UTC)", "started", lambda n, row: row.start_time, optional=True),
    ]
    shown = {name for row in rows for name in [*row.step_seconds, *row.reused_steps]}
    steps = [name for name in STEP_NAMES if name in shown] + sorted(shown - set(STEP_NAMES))
    times = [runs[0], runs[1], *(Column(name, SHORT_STEPS.get(name, name), _step_time(name),
                                        _step_time(name, "r"), numeric=True) for name in steps),
             Column("steps s", "steps", lambda n, row: f"{row.steps_seconds:.1f}", numeric=True)]
    legend = "step seconds; wall s = steps s + overhead s (ovh)"
    if any(row.reused_steps for row in rows):
        legend += "; reused (r): up to date or cached, an earlier run's work, not counted"
    lines = [*fit(runs, rows, width), "", *textwrap.wrap(legend, width), *fit(times, rows, width)]
    wrapped = [textwrap.fill(note, width, subsequent_indent="    ") for note in notes]
    return "\n".join([*lines, *(["", *wrapped] if wrapped else [])])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _step_time(name: str, reused: str = "reused") -> Callable[[int, RunRow], str]:
    return lambda n, row: (f"{row.step_seconds[name]:.1f}" if name in row.step_seconds
                           else reused if name in row.reused_steps else "")


def compact_window(label: str, drop_color: bool) -> str:
    """`green/2023-01..2023-03` as `2023-01..03` (the color only when runs differ in it)."""
    color, _, months = label.rpartition("/")
    first, _, last = months.partition("..")
    if last[:4] == first[:4]:
        last = last[5:]
    short = f"{first}..{last}" if last else first
    return short if drop_color or not color else f"{color}/{short}"


def display_width(text: str) -> int:
    """Terminal cells `text` takes: wide characters (🏆) take two."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 0 if unicodedata.combining(char) else 1
               for char in text)


def terminal_width() -> int:
    """The width of the terminal the table prints to: its real width, or COLUMNS, or 100."""
    import shutil

    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def fit(columns: list[Column], rows: list[RunRow], width: int, key: int = 2) -> list[str]:
    """The table of `rows` in at most `width` terminal cells, a row always on one line if it can be.

    In turn, until it fits: leave out the optional columns, then shorten columns one at a time
    (short header, compact values), the one that saves most first. If it still does not fit,
    the columns after the first `key` (the run's number and runner) are split into blocks,
    each repeating those key columns.
    """
    def cells(chosen: list[Column], short: set[int]) -> list[list[str]]:
        table = [[column.short if i in short else column.header for i, column in enumerate(chosen)]]
        return table + [[(column.compact or column.value)(n, row) if i in short else column.value(n, row)
                         for i, column in enumerate(chosen)] for n, row in enumerate(rows, 1)]

    chosen, short = columns, set()
    text = cells(chosen, short)
    if _line_width(text, range(len(chosen))) > width:
        chosen = [column for column in columns if not column.optional]
        text = cells(chosen, short)
    while _line_width(text, range(len(chosen))) > width and len(short) < len(chosen):
        widths = _widths(text)
        shorter = {i: _widths(cells(chosen, short | {i}))[i] for i in range(len(chosen)) if i not in short}
        best = max(shorter, key=lambda i: widths[i] - shorter[i])
        if widths[best] == shorter[best]:
            break
        short.add(best)
        text = cells(chosen, short)
    if _line_width(text, range(len(chosen))) <= width:
        return _render(text, chosen, [list(range(len(chosen)))])
    blocks: list[list[int]] = [list(range(key))]
    for index in range(key, len(chosen)):
        if len(blocks[-1]) > key and _line_width(text, [*blocks[-1], index]) > width:
            blocks.append(list(range(key)))
        blocks[-1].append(index)
    return _render(text, chosen, blocks)


def _widths(cells: list[list[str]]) -> list[int]:
    return [max(display_width(row[i]) for row in cells) for i in range(len(cells[0]))]


def _line_width(cells: list[list[str]], indexes: Iterable[int]) -> int:
    widths = _widths(cells)
    chosen = [widths[i] for i in indexes]
    return sum(chosen) + 2 * (len(chosen) - 1)


def _render(cells: list[list[str]], columns: list[Column], blocks: list[list[int]]) -> list[str]:
    widths = _widths(cells)

    def cell(i: int, text: str) -> str:
        pad = " " * (widths[i] - display_width(text))
        return pad + text if columns[i].numeric else text + pad

    lines: list[str] = []
    for block in blocks:
        if lines:
            lines.append("")
        lines += ["  ".join(cell(i, row[i]) for i in block).rstrip() for row in cells]
    return lines


def as_json(rows: list[RunRow], problems: list[Disagreement], champion: str | None, cautions: list[str]) -> str:
    runs = [{k: v for k, v in asdict(row).items() if k != "config_key"} for row in rows]
    return json.dumps({"runs": runs, "disagreements": [asdict(p) for p in problems],
                       "champion_elsewhere": champion, "warnings": cautions}, indent=2)


def figure(rows: list[RunRow], notes: Iterable[str] = ()) -> Figure:
    """One horizontal bar per run, a label per line: RMSE on the left; on the right the wall
    time split into the steps and the engine's overhead. The champion's label is starred;
    equal RMSEs are said in words; the `notes` go under the chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taxipipe.pipeline import STEP_NAMES

    labels = [f"{'★ ' if row.champion else ''}{number} {row.runner} · {row.partition} · "
              f"{row.kind} {row.feature_mode} {row.compute}" for number, row in enumerate(rows, 1)]
    positions = list(range(len(rows)))
    chart, (left, right) = plt.subplots(1, 2, figsize=(14, 1.5 + 0.4 * len(rows)), sharey=True,
                                        gridspec_kw={"width_ratios": [1, 2]})
    left.barh(positions, [row.rmse for row in rows], color="tab:blue")
    for position, row in zip(positions, rows):
        left.annotate(f"{row.rmse:.4f}", (row.rmse, position), xytext=(-3, 0), textcoords="offset points",
                      ha="right", va="center", color="white", fontsize="small")
    scores = {f"{row.rmse:.4f}" for row in rows}
    if len(rows) > 1 and len(scores) == 1:
        left.set_xlabel(f"all {len(rows)} runs: RMSE {scores.pop()}", fontweight="bold")
    starred = any(row.champion for row in rows)
    left.set(title="Validation RMSE (minutes)" + ("; ★ champion" if starred else ""), yticks=positions)
    left.set_yticklabels(labels)
    left.invert_yaxis()
    for tick, row in zip(left.get_yticklabels(), rows):
        tick.set_fontweight("bold" if row.champion else "normal")
    left_edge = [0.0] * len(rows)
    colors = plt.get_cmap("tab10")
    for index, name in enumerate(STEP_NAMES):
        widths = [row.step_seconds.get(name, 0.0) for row in rows]
        if any(widths):
            right.barh(positions, widths, left=left_edge, label=name, color=colors(index % 10))
            left_edge = [edge + width for edge, width in zip(left_edge, widths)]
    overhead = [max(row.overhead_seconds or 0.0, 0.0) for row in rows]
    if any(overhead):
        right.barh(positions, overhead, left=left_edge, label="engine overhead", color="lightgrey",
                   hatch="//", edgecolor="grey")
    right.set(title="Wall time: steps + engine overhead", xlabel="seconds")
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    chart.tight_layout()
    text = "\n".join(textwrap.fill(f"• {note}", 160, subsequent_indent="  ") for note in notes)
    if text:
        chart.text(0.0, 0.0, text, ha="left", va="top", fontsize="small", transform=chart.transFigure)
    return chart


def plot(rows: list[RunRow], path: Path, notes: Iterable[str] = ()) -> None:
    """Write `figure` as a PNG."""
    import matplotlib.pyplot as plt

    chart = figure(rows, notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(chart)


def report(settings: Settings, latest_only: bool, as_machine: bool, plot_path: Path | None,
           check: bool, width: int | None = None) -> tuple[str, int, bool]:
    """The text (table or JSON), the exit status of `taxipipe compare`, and whether it wrote
    the plot (only when there are runs).

    Only `check` judges the runs: it adds the verdict and fails when runs disagree or none exist.
    The table fits `width` columns (default: the terminal's width).
    """
    rows = collect(settings, latest_only)
    problems = disagreements(rows)
    champion = champion_elsewhere(settings, rows) if rows else None
    cautions = timing_warnings(rows)
    if plot_path is not None and rows:
        plot(rows, plot_path, [*([champion] if champion else []), *cautions])
    if as_machine:
        text = as_json(rows, problems, champion, cautions)
    elif not rows:
        text = f"no runs yet in {settings.tracking_uri()} (experiments {settings.mlflow.experiment_name})"
    else:
        width = width or terminal_width()
        verdict = [textwrap.fill("⚠️  " + p.describe(), width, subsequent_indent="    ") for p in problems] or [
            f"✅ runs on the same data and config agree on RMSE (within {RMSE_AGREEMENT:g})"]
        notes = [*([champion] if champion else []), *(f"⚠️  {caution}" for caution in cautions)]
        text = "\n".join([table(rows, width, notes), *(["", *verdict] if check else [])])
    status = 1 if check and (problems or not rows) else 0
    return text, status, plot_path is not None and bool(rows)
