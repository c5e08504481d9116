"""The engines side by side on one real month: what each costs beyond the steps.

    python benchmarks/bench_engines.py                    # all engines, median of 3, then backfill and kill
    python benchmarks/bench_engines.py --repeat 1 --engines simple,make --skip backfill,kill

Every engine trains green 2021-01 (validation 2021-02) from the real months (TAXIPIPE_TEST_DATA,
or ../shared/data/tlc) through the data URL template, the months already in the home's
download cache. Each runs cold (a fresh home: databases, stores, caches created) and warm
(again on the same home, so make and Prefect reuse what is up to date), `--repeat` times,
interleaved; the tables give medians. Wall and peak RSS are of the whole process tree (the
run's process and every process it starts, such as Prefect's temporary server), sampled
every 0.1 s. `steps` is the sum of the step times the run printed; `overhead` is wall minus
steps; `floor` is the same engine running nine no-op tasks (engine_floors.py), so `adapter`
(overhead minus floor) is what taxipipe adds to the engine.

Then, per engine: a run killed with SIGKILL during train, then run again; and a backfill of 6
training months (7 months resampled from the real ones with make_scaled_tlc.py, green layout)
by the simple runner (one run per month, in order) and by Prefect's Dask backfill (months in
parallel); `--backfill-engines` adds others, which take one partition per call here (Airflow
and Dagster backfill in parallel only with their scheduler or daemon running). Each table
prints as soon as its part is done.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import REPO, SCALER, TEMPLATE, TLC, WORK

PY = sys.executable
EXAMPLES = REPO / "examples"
FLOORS = Path(__file__).with_name("engine_floors.py")
MONTH = ("green", 2021, 1)
COMMANDS = {
    "simple": ([PY, "-m", "taxipipe", "run"], "python"),
    "make": ([PY, "-m", "taxipipe", "make", "deploy"], "python"),
    "airflow": ([PY, str(EXAMPLES / "airflow_pipeline.py")], "airflow"),
    "prefect": ([PY, str(EXAMPLES / "prefect_pipeline.py")], "prefect"),
    "dagster": ([PY, str(EXAMPLES / "dagster_pipeline.py")], "dagster"),
    "script": ([PY, str(EXAMPLES / "duration-prediction.py")], "python"),
}
DONE = re.compile(r"✅ Task '([\w\[\]-]+)' completed in ([\d.]+)s")
UP_TO_DATE = re.compile(r"⏭️  Task '([\w\[\]-]+)': Up to date")
BACKFILL_MONTHS = [f"2020-{month:02d}" for month in range(1, 7)]


@dataclass
class Run:
    wall: float
    peak_rss_mb: float
    output: str
    status: int

    @property
    def steps(self) -> float:
        return sum(float(seconds) for _, seconds in DONE.findall(self.output))

    @property
    def ran(self) -> list[str]:
        return [name for name, _ in DONE.findall(self.output)]

    @property
    def reused(self) -> list[str]:
        return UP_TO_DATE.findall(self.output)


def environment() -> dict[str, str]:
    """This environment without taxipipe settings or a Prefect server: every run starts alike."""
    drop = ("TAXIPIPE_", "PREFECT_", "AIRFLOW", "DAGSTER_HOME", "COLUMNS")
    return {key: value for key, value in os.environ.items() if not key.startswith(drop)}


def tree_rss(root: int) -> int:
    """The resident memory of `root` and all its descendants now, in bytes."""
    import psutil

    try:
        parent = psutil.Process(root)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def launch(command: list[str], cwd: Path) -> tuple[subprocess.Popen, Path]:
    log = Path(tempfile.mkstemp(prefix="bench-engines-", suffix=".log")[1])
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=environment(),
                                   start_new_session=True)
    return process, log


def finish(process: subprocess.Popen, log: Path, started: float, peak: int) -> Run:
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    _kill_group(process)
    output = log.read_text(errors="replace")
    log.unlink()
    return Run(wall, peak / 2**20, output, process.returncode)


def measure(command: list[str], cwd: Path) -> Run:
    """Run `command` to its end: wall time, peak RSS of its process tree, output."""
    started = time.perf_counter()
    process, log = launch(command, cwd)
    run = finish(process, log, started, 0)
    if run.status != 0:
        sys.exit(f"benchmark command failed ({run.status}): {' '.join(command)}\n{run.output[-3000:]}")
    return run


def _kill_group(process: subprocess.Popen) -> None:
    """End what the run left behind (a temporary server...)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def data_flags(home: Path, template: str, color: str, year: int, month: int) -> list[str]:
    return ["--home", str(home), "--url-template", template, "--color", color, "--year", str(year),
            "--month", str(month)]


def fresh_home(home: Path, template: str) -> tuple[Path, list[str]]:
    """An empty home with the month already in its download cache, and the flags that run on it."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    prefill(home, template, *MONTH)
    return home, data_flags(home, template, *MONTH)


def prefill(home: Path, template: str, color: str, year: int, month: int) -> None:
    """Put the months the run reads into the home's download cache, as a first run would."""
    from taxipipe.config import load_settings
    from taxipipe.tlc import fetch, source_url
    from taxipipe.layout import Layout

    settings = load_settings(overrides={"home": str(home), "data": {
        "url_template": template, "color": color, "year": year, "month": month}})
    layout = Layout(home, settings.partition, settings.data.train_months)
    for partition in settings.months:
        fetch(source_url(template, partition), layout.download(partition))


def engine_runs(engines: list[str], repeat: int, work: Path) -> dict[str, dict[str, list[Run]]]:
    """Cold and warm runs of every engine, and of its floor, interleaved `repeat` times."""
    template = str(TLC / TEMPLATE)
    results: dict[str, dict[str, list[Run]]] = {name: {} for name in engines}
    floors = {COMMANDS[name][1] for name in engines}
    for round_ in range(repeat):
        for name in engines:
            command, _ = COMMANDS[name]
            home, flags = fresh_home(work / f"{name}-{round_}", template)
            for phase in ("cold", "warm"):
                run = measure([*command, *flags], cwd=home)
                results[name].setdefault(phase, []).append(run)
                print(f"  {name:8} {phase}: {run.wall:6.1f} s wall, {run.steps:6.1f} s steps, "
                      f"{run.peak_rss_mb:6.0f} MB", flush=True)
        for floor in sorted(floors):
            home = work / f"floor-{floor}-{round_}"
            shutil.rmtree(home, ignore_errors=True)
            for phase in ("cold", "warm"):
                run = measure([PY, str(FLOORS), floor, str(home)], cwd=work)
                results.setdefault(f"floor:{floor}", {}).setdefault(phase, []).append(run)
                print(f"  floor {floor:8} {phase}: {run.wall:6.1f} s wall", flush=True)
    return results


def median(runs: list[Run], value: str) -> float:
    return statistics.median(getattr(run, value) for run in runs)


def engine_table(results: dict[str, dict[str, list[Run]]], engines: list[str]) -> list[str]:
    simple = {phase: median(results["simple"][phase], "wall") for phase in ("cold", "warm")} \
        if "simple" in results else None
    head = ("engine", "phase", "wall s", "steps s", "overhead s", "vs simple s", "peak MB", "floor s",
            "adapter s", "steps ran")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in engines:
        floor = results[f"floor:{COMMANDS[name][1]}"]
        for phase in ("cold", "warm"):
            runs = results[name][phase]
            wall, steps = median(runs, "wall"), median(runs, "steps")
            floor_wall = median(floor[phase], "wall")
            versus = f"{wall - simple[phase]:+.1f}" if simple else "-"
            ran = f"{len(runs[-1].ran)} ran, {len(runs[-1].reused)} reused"
            lines.append(f"| {name} | {phase} | {wall:.1f} | {steps:.1f} | {wall - steps:.1f} | {versus} | "
                         f"{median(runs, 'peak_rss_mb'):.0f} | {floor_wall:.1f} | {wall - steps - floor_wall:+.1f} | "
                         f"{ran} |")
    return lines


def floor_table(results: dict[str, dict[str, list[Run]]]) -> list[str]:
    lines = ["| floor (9 no-op tasks) | cold s | warm s | peak MB |", "|---|---|---|---|"]
    for key in sorted(name for name in results if name.startswith("floor:")):
        runs = results[key]
        lines.append(f"| {key[6:]} | {median(runs['cold'], 'wall'):.1f} | {median(runs['warm'], 'wall'):.1f} | "
                     f"{median(runs['cold'], 'peak_rss_mb'):.0f} |")
    return lines


def backfill_months(work: Path) -> Path:
    """Seven green-layout months 2020-01..07 (six training months and the last validation one),
    resampled from the real 2021 months, made once."""
    folder = work / "backfill-months"
    sources = [str(path) for path in sorted(TLC.glob("green_tripdata_2021-0[1-5].parquet"))]
    for seed, month in enumerate([*BACKFILL_MONTHS, "2020-07"]):
        target = folder / f"green_tripdata_{month}.parquet"
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            subprocess.run([PY, str(SCALER), str(target), *sources, "--rows", "75000", "--month", month,
                            "--schema", "green", "--seed", str(seed)], check=True, capture_output=True)
    return folder


def backfill(engines: list[str], work: Path) -> list[str]:
    """Six training months per engine on one fresh home: one command per month where the
    engine runs one partition per call, Prefect's Dask backfill where it has one."""
    template = str(backfill_months(work) / TEMPLATE)
    lines = ["| engine | how | months | wall s | parallel |", "|---|---|---|---|---|"]
    for name in engines:
        home = work / f"backfill-{name}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        started = time.perf_counter()
        peak = 0.0
        if name == "prefect":
            run = measure([PY, str(EXAMPLES / "prefect_backfill.py"), *BACKFILL_MONTHS, "--home", str(home),
                           "--url-template", template], cwd=home)
            how, parallel, peak = "examples/prefect_backfill.py (Dask, 2 workers)", "yes", run.peak_rss_mb
        else:
            command, _ = COMMANDS[name]
            for label in BACKFILL_MONTHS:
                run = measure([*command, *data_flags(home, template, "green", 2020, int(label[5:]))], cwd=home)
                peak = max(peak, run.peak_rss_mb)
            how, parallel = "one run per month, in order", "no"
        wall = time.perf_counter() - started
        lines.append(f"| {name} | {how} | {len(BACKFILL_MONTHS)} | {wall:.1f} | {parallel} |")
        print(f"  backfill {name:8}: {wall:6.1f} s", flush=True)
    return lines


def training_started(home: Path) -> bool:
    """True once train created its MLflow run (status RUNNING) in the home's store."""
    database = home / "mlflow" / "mlflow.db"
    if not database.exists():
        return False
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def kill_during_train(engines: list[str], work: Path) -> list[str]:
    """Kill each engine's run (its whole process tree) with SIGKILL once train started; run again."""
    template = str(TLC / TEMPLATE)
    lines = ["| engine | killed after s | rerun: steps run again | rerun: reused | rerun wall s |",
             "|---|---|---|---|---|"]
    for name in engines:
        command, _ = COMMANDS[name]
        home, flags = fresh_home(work / f"kill-{name}", template)
        started = time.perf_counter()
        process, log = launch([*command, *flags], cwd=home)
        while process.poll() is None and not training_started(home):
            time.sleep(0.05)
        killed_after = time.perf_counter() - started
        if process.poll() is not None:
            sys.exit(f"{name} ended before train could be killed:\n{log.read_text()[-3000:]}")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.unlink()
        rerun = measure([*command, *flags], cwd=home)
        ran = ", ".join(step for step in rerun.ran if not step.startswith("extract")) or "-"
        lines.append(f"| {name} | {killed_after:.1f} | {ran} | {len(rerun.reused)} | {rerun.wall:.1f} |")
        print(f"  kill {name:8}: rerun {rerun.wall:6.1f} s, ran {ran}", flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="cold and warm runs per engine (median)")
    parser.add_argument("--engines", default=",".join(COMMANDS), help="comma-separated, from: " + ", ".join(COMMANDS))
    parser.add_argument("--skip", default="", help="comma-separated parts to leave out: engines, backfill, kill")
    parser.add_argument("--backfill-engines", default="simple,prefect",
                        help="engines to backfill (others run one partition per call: six times a run)")
    args = parser.parse_args()
    engines = [name for name in args.engines.split(",") if name]
    unknown = sorted(set(engines) - set(COMMANDS))
    if unknown or not (TLC / "green_tripdata_2021-01.parquet").exists():
        sys.exit(f"unknown engines {unknown}" if unknown else f"no real TLC months in {TLC}: set TAXIPIPE_TEST_DATA")
    skip = set(args.skip.split(","))
    work = WORK / "engines"
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench_engines on {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    if "engines" not in skip:
        results = engine_runs(engines, args.repeat, work)
        print("\n".join(["", f"green 2021-01 -> 02, median of {args.repeat}", *engine_table(results, engines),
                         "", *floor_table(results), ""]), flush=True)
    if "kill" not in skip:
        print("\n".join(["", "SIGKILL during train, then the same command again",
                         *kill_during_train([name for name in engines if name != "script"], work), ""]), flush=True)
    if "backfill" not in skip:
        print("\n".join(["", "backfill of 6 training months (2020-01..06, resampled)",
                         *backfill([name for name in args.backfill_engines.split(",") if name in COMMANDS
                                    and name != "script"], work), ""]), flush=True)
    print(f"\nload at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
