#!/usr/bin/env python
"""What an up-to-date `taxipipe make deploy` costs, on a real month and on a 3M-row month.

Targets (issue 3): an up-to-date run finishes in at most 1.0 s wall, and a 3M-row month adds
at most 0.1 s to that, because unchanged files are not re-hashed. The script builds both
partitions once (a --workdir kept from an earlier run is reused), then times up-to-date runs
of both in child processes, taking turns (median of --runs), and, for scale, one run after
touching every recorded file, which forces a re-hash of all of them.

usage: python benchmarks/bench_make_uptodate.py [--runs 7] [--rows 3000000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TEMPLATE = "{color}_tripdata_{year}-{month:02d}.parquet"


def taxipipe(*args: str) -> tuple[float, str]:
    """Run `taxipipe ARGS` in a child process; return its wall time and output."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "taxipipe", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"taxipipe {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return seconds, result.stdout


def partition_flags(home: Path, data: Path, year: int, month: int) -> list[str]:
    return ["--home", str(home), "--url-template", str(data / TEMPLATE), "--year", str(year), "--month", str(month)]


def up_to_date_seconds(partitions: list[list[str]], runs: int) -> list[list[float]]:
    """Wall times of up-to-date builds, the partitions taking turns so load hits them alike."""
    times: list[list[float]] = [[] for _ in partitions]
    for _ in range(runs):
        for flags, seconds in zip(partitions, times):
            took, out = taxipipe("make", "deploy", *flags)
            if "Running task" in out:
                sys.exit(f"expected an up-to-date build, but steps ran:\n{out}")
            seconds.append(took)
    return times


def scaled_months(data: Path, rows: int) -> None:
    """Green-layout 2023-01 and 2023-02 of `rows` rows each, resampled from real months."""
    sources = [str(path) for path in sorted((SHARED / "data" / "tlc").glob("green_tripdata_2023-0*.parquet"))]
    for month in ("2023-01", "2023-02"):
        out = data / f"green_tripdata_{month}.parquet"
        if out.exists():
            continue
        subprocess.run([sys.executable, str(SHARED / "bench" / "make_scaled_tlc.py"), str(out), *sources,
                        "--rows", str(rows), "--month", month, "--schema", "green"], check=True)


def touch_recorded_files(home: Path, lock: Path) -> int:
    """Give every file the lock file records a new mtime (same bytes); return their total size."""
    steps = json.loads(lock.read_text())["steps"].values()
    keys = {key for entry in steps for key in (*entry["inputs"], *entry["outputs"])}
    now = time.time_ns()
    for key in keys:
        os.utime(home / key, ns=(now, now))
    return sum((home / key).stat().st_size for key in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--workdir", type=Path, help="where homes and scaled data go (default: a temp dir)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-make-"))

    small = partition_flags(work / "home-small", SHARED / "data" / "tlc", 2021, 1)
    build_small, _ = taxipipe("make", "deploy", *small)
    data = work / "scaled"
    data.mkdir(parents=True, exist_ok=True)
    scaled_months(data, args.rows)
    large = partition_flags(work / "home-large", data, 2023, 1)
    build_large, _ = taxipipe("make", "deploy", *large)
    small_times, large_times = up_to_date_seconds([small, large], args.runs)
    touched = touch_recorded_files(work / "home-large", work / "home-large" / "state/green/2023-01.lock.json")
    rehash, _ = taxipipe("make", "deploy", *large)

    small_median, large_median = statistics.median(small_times), statistics.median(large_times)
    extra = large_median - small_median
    print(f"up-to-date `taxipipe make deploy`, median of {args.runs} runs each, interleaved (child process, wall):")
    print(f"  green 2021-01 (76k rows):         {small_median:.3f} s  (min {min(small_times):.3f}, "
          f"max {max(small_times):.3f}; build {build_small:.1f} s)  target <= 1.0 s: "
          f"{'ok' if small_median <= 1.0 else 'MISSED'}")
    print(f"  scaled 2023-01 ({args.rows:,} rows): {large_median:.3f} s  (min {min(large_times):.3f}, "
          f"max {max(large_times):.3f}; build {build_large:.1f} s)")
    print(f"  extra cost of the large month:    {extra:+.3f} s  target <= 0.1 s: "
          f"{'ok' if extra <= 0.1 else 'MISSED'}")
    print(f"  after touching every recorded file ({touched / 1e6:,.0f} MB re-hashed once): {rehash:.3f} s")
    print(f"work directory: {work}")


if __name__ == "__main__":
    main()
