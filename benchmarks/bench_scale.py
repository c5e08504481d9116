"""Windows of 3M-row months: in memory, external memory and Dask, and the 3M-row pair.

    python benchmarks/bench_scale.py                       # windows 1 2 4 6, all three modes
    python benchmarks/bench_scale.py --windows 1 2 --modes memory dask --work /tmp/bench

Months are yellow-layout files of --rows rides each made by make_scaled_tlc.py in a
temporary folder (or --work), never in the repository. Every window ends at 2023-06 and
validates on 2023-07. First the pair: `taxipipe run` on one month against the reference
pipeline on the same two files (wall, peak RSS and RMSE ratios); then the table: wall time,
peak resident memory of all processes of the run together (Dask workers included, sampled
every 0.1 s) and RMSE. Each row is printed as soon as it is measured.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import REFERENCE, SCALER, TEMPLATE, TLC, require_inputs

LAST, VALIDATION = (2023, 6), "2023-07"
MODES = {
    "memory": ["--engine", "local"],
    "external": ["--engine", "local"],
    "dask": ["--engine", "dask"],
}
MODE_ENV = {"memory": {"TAXIPIPE_COMPUTE__MEMORY_GB": "1000"},
            "external": {"TAXIPIPE_COMPUTE__EXTERNAL_MEMORY": "true"}, "dask": {}}


@dataclass
class Sample:
    wall: float
    peak_rss_mb: float
    stdout: str


def tree_peak(command: list[str], env: dict[str, str], cwd: Path) -> Sample:
    """Run `command`; the peak of the summed RSS of it and all its descendants."""
    import os

    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **env}, cwd=cwd)
    root, peak, output = psutil.Process(process.pid), 0, []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        total = 0
        try:
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, total)
        time.sleep(0.1)
    process.wait()
    reader.join()
    wall = time.perf_counter() - started
    text = "".join(output)
    if process.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(command)}\n{text[-3000:]}")
    return Sample(wall, peak / 2**20, text)


def month_labels(count: int) -> list[str]:
    year, month = LAST
    index = year * 12 + month - 1
    return [f"{i // 12}-{i % 12 + 1:02d}" for i in range(index - count + 1, index + 1)]


def make_months(folder: Path, labels: list[str], rows: int) -> None:
    sources = [str(path) for path in sorted(TLC.glob("green_tripdata_202[2-9]-*.parquet"))]
    for label in labels:
        target = folder / f"yellow_tripdata_{label}.parquet"
        if not target.exists():
            seed = int(label.replace("-", ""))
            subprocess.run([sys.executable, str(SCALER), str(target), *sources, "--rows", str(rows),
                            "--month", label, "--schema", "yellow", "--seed", str(seed)], check=True)


def ours(folder: Path, home: Path, window: int, mode: str) -> tuple[Sample, float]:
    command = [sys.executable, "-m", "taxipipe", "run", "--home", str(home), "--color", "yellow",
               "--url-template", str(folder / TEMPLATE), "--year", str(LAST[0]), "--month", str(LAST[1]),
               "--train-months", str(window), *MODES[mode]]
    sample = tree_peak(command, MODE_ENV[mode], folder)
    return sample, float(re.search(r"Final model RMSE: ([\d.]+)", sample.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 2, 4, 6])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--work", type=Path, help="where months and homes go (default: a temporary folder)")
    parser.add_argument("--no-pair", action="store_true", help="skip the pair against the reference")
    args = parser.parse_args()
    require_inputs()
    work = args.work or Path(tempfile.mkdtemp(prefix="taxipipe-bench-scale-"))
    folder = work / "months"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}", flush=True)
    make_months(folder, [*month_labels(max(args.windows)), VALIDATION], args.rows)

    if not args.no_pair:
        files = [str(folder / f"yellow_tripdata_{label}.parquet") for label in (month_labels(1)[0], VALIDATION)]
        reference = tree_peak([sys.executable, str(REFERENCE), *files, "--tracking-uri",
                               f"sqlite:///{work / 'reference.db'}"], {}, folder)
        reference_rmse = json.loads(reference.stdout.strip().splitlines()[-1])["rmse"]
        pair, pair_rmse = ours(folder, work / "home-pair", 1, "memory")
        print(f"pair (1 month of {args.rows:,} rides -> {VALIDATION}): wall {pair.wall:.1f} s vs "
              f"{reference.wall:.1f} s = {pair.wall / reference.wall:.2f}x; peak RSS {pair.peak_rss_mb:.0f} MB vs "
              f"{reference.peak_rss_mb:.0f} MB = {pair.peak_rss_mb / reference.peak_rss_mb:.2f}x; "
              f"RMSE {pair_rmse:.4f} vs {reference_rmse:.4f}", flush=True)

    print("| months | rows (approx.) | mode | wall s | peak RSS MB (all processes) | RMSE |", flush=True)
    print("|---|---|---|---|---|---|", flush=True)
    for window in args.windows:
        for mode in args.modes:
            sample, rmse = ours(folder, work / f"home-{mode}", window, mode)
            print(f"| {window} | {window * args.rows / 1e6:.0f}M | {mode} | {sample.wall:.1f} | "
                  f"{sample.peak_rss_mb:.0f} | {rmse:.4f} |", flush=True)


if __name__ == "__main__":
    main()
