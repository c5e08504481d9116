"""The pipeline against the reference, on the same files, in one run; prints ratios.

    python benchmarks/bench_pipeline.py green          # real green 2021-01 -> 02, categorical
    python benchmarks/bench_pipeline.py green-onehot   # same, DictVectorizer-identical one-hot
    python benchmarks/bench_pipeline.py scaled         # 3M-row yellow layout 2023-01 -> 02

Both sides do the whole job, MLflow included: the reference with --tracking-uri on a fresh
SQLite store, taxipipe with `taxipipe run` (nine steps, registry and champion gate) on a fresh
home. Wall time and peak RSS are of each whole process.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from common import REFERENCE, SCALER, TEMPLATE, TLC, WORK, Measured, measure, ratio, require_inputs

SCENARIOS = {
    "green": {"color": "green", "year": 2021, "month": 1, "features": "categorical"},
    "green-onehot": {"color": "green", "year": 2021, "month": 1, "features": "onehot"},
    "scaled": {"color": "yellow", "year": 2023, "month": 1, "features": "categorical", "rows": 3_000_000},
}


def scaled_months(rows: int) -> Path:
    """Two yellow-layout months of `rows` rows each, made once and kept in the work folder."""
    folder = WORK / f"scaled-{rows}"
    sources = [str(path) for path in sorted(TLC.glob("green_tripdata_2023-0*.parquet"))]
    for seed, month in enumerate(("2023-01", "2023-02")):
        target = folder / f"yellow_tripdata_{month}.parquet"
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(SCALER), str(target), *sources, "--rows", str(rows),
                            "--month", month, "--schema", "yellow", "--seed", str(seed)], check=True)
    return folder


def step_seconds(stdout: str) -> dict[str, float]:
    return {name: float(seconds) for name, seconds in
            re.findall(r"✅ Task '(\w+)' completed in ([\d.]+)s", stdout)}


def run_ours(folder: Path, scenario: dict, home: Path) -> tuple[Measured, float, dict[str, float]]:
    shutil.rmtree(home, ignore_errors=True)
    command = [sys.executable, "-m", "taxipipe.cli", "run", "--home", str(home),
               "--url-template", str(folder / TEMPLATE), "--color", scenario["color"],
               "--year", str(scenario["year"]), "--month", str(scenario["month"]),
               "--features", scenario["features"]]
    result = measure(command)
    rmse = float(re.search(r"Final model RMSE: ([\d.]+)", result.stdout).group(1))
    return result, rmse, step_seconds(result.stdout)


def run_reference(folder: Path, scenario: dict, store: Path) -> tuple[Measured, dict]:
    store.unlink(missing_ok=True)
    month = f"{scenario['year']}-{scenario['month']:02d}"
    following = f"{scenario['year']}-{scenario['month'] + 1:02d}"
    files = [str(folder / f"{scenario['color']}_tripdata_{label}.parquet") for label in (month, following)]
    shutil.rmtree(store.parent / "mlruns", ignore_errors=True)
    result = measure([sys.executable, str(REFERENCE), *files, "--tracking-uri", f"sqlite:///{store}"],
                     cwd=store.parent)
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=SCENARIOS)
    args = parser.parse_args()
    require_inputs()
    scenario = SCENARIOS[args.scenario]
    folder = scaled_months(scenario["rows"]) if "rows" in scenario else TLC
    work = WORK / args.scenario
    work.mkdir(parents=True, exist_ok=True)

    reference, reported = run_reference(folder, scenario, work / "reference.db")
    ours, rmse, steps = run_ours(folder, scenario, work / "home")

    ref_prep = reported["seconds"]["transform"] + reported["seconds"]["features"]
    our_prep = steps.get("transform", 0) + steps.get("features", 0)
    print(f"scenario {args.scenario}: {scenario}")
    print(f"{'':24}{'reference':>12}{'taxipipe':>12}{'ratio':>10}")
    print(f"{'wall seconds':24}{reference.wall:12.2f}{ours.wall:12.2f}{ratio(ours.wall, reference.wall):>10}")
    print(f"{'peak RSS MB':24}{reference.peak_rss_mb:12.0f}{ours.peak_rss_mb:12.0f}"
          f"{ratio(ours.peak_rss_mb, reference.peak_rss_mb):>10}")
    print(f"{'transform+features s':24}{ref_prep:12.2f}{our_prep:12.2f}{ratio(our_prep, ref_prep):>10}")
    print(f"{'train s':24}{reported['seconds']['train']:12.2f}{steps.get('train', 0):12.2f}"
          f"{ratio(steps.get('train', 0), reported['seconds']['train']):>10}")
    print(f"{'RMSE':24}{reported['rmse']:12.4f}{rmse:12.4f}{rmse - reported['rmse']:+10.4f}")
    print("taxipipe step seconds: " + ", ".join(f"{name} {sec:.2f}" for name, sec in steps.items()))


if __name__ == "__main__":
    main()
