"""The pipeline against the reference, on the same files, in one run; prints ratios.

    python benchmarks/bench_pipeline.py green          # real green 2021-01 -> 02, categorical
    python benchmarks/bench_pipeline.py green-onehot   # same, DictVectorizer-identical one-hot
    python benchmarks/bench_pipeline.py scaled         # 3M-row yellow layout 2023-01 -> 02
    options: --repeat N (median of N interleaved runs), --store fresh|warm

Both sides do the whole job, MLflow included: the reference with --tracking-uri on a SQLite
store, taxipipe with `taxipipe run` (nine steps, registry and champion gate). `--store fresh`
starts both from an empty store every time (the first run on a machine); `--store warm`
reuses a store each side created in an untimed first run (every later run). Wall time and
peak RSS are of each whole process.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from taxipipe.partition import Partition

from common import REFERENCE, SCALER, TEMPLATE, TLC, WORK, Measured, measure, ratio, require_inputs

SCENARIOS = {
    "green": {"color": "green", "year": 2021, "month": 1, "features": "categorical"},
    "green-onehot": {"color": "green", "year": 2021, "month": 1, "features": "onehot"},
    "scaled": {"color": "yellow", "year": 2023, "month": 1, "features": "categorical", "rows": 3_000_000},
}


def scaled_months(rows: int) -> Path:
    """Two yellow-layout months of `rows` rows each, made once and kept in the work folder.

    Resampled from the real green months of 2022 on (16.5k zone pairs, as in the reference's
    published 3M-row figures).
    """
    folder = WORK / f"scaled-{rows}"
    sources = [str(path) for path in sorted(TLC.glob("green_tripdata_202[2-9]-*.parquet"))]
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


class Ours:
    def __init__(self, folder: Path, scenario: dict, home: Path) -> None:
        self.home = home
        self.command = [sys.executable, "-m", "taxipipe", "run", "--home", str(home),
                        "--url-template", str(folder / TEMPLATE), "--color", scenario["color"],
                        "--year", str(scenario["year"]), "--month", str(scenario["month"]),
                        "--features", scenario["features"]]

    def reset(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def run(self) -> tuple[Measured, float, dict[str, float]]:
        result = measure(self.command)
        rmse = float(re.search(r"Final model RMSE: ([\d.]+)", result.stdout).group(1))
        steps = step_seconds(result.stdout)
        return result, rmse, {"transform+features": steps["transform"] + steps["features"],
                              "train": steps["train"], **steps}


class Reference:
    def __init__(self, folder: Path, scenario: dict, work: Path) -> None:
        self.work = work
        month = Partition(scenario["color"], scenario["year"], scenario["month"])
        labels = (month.label, month.next().label)
        files = [str(folder / f"{scenario['color']}_tripdata_{label}.parquet") for label in labels]
        self.command = [sys.executable, str(REFERENCE), *files, "--tracking-uri", f"sqlite:///{work / 'ref.db'}"]

    def reset(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)

    def run(self) -> tuple[Measured, float, dict[str, float]]:
        result = measure(self.command, cwd=self.work)
        reported = json.loads(result.stdout.strip().splitlines()[-1])
        seconds = reported["seconds"]
        return result, reported["rmse"], {"transform+features": seconds["transform"] + seconds["features"],
                                          "train": seconds["train"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", choices=["fresh", "warm"], default="fresh")
    args = parser.parse_args()
    require_inputs()
    scenario = SCENARIOS[args.scenario]
    folder = scaled_months(scenario["rows"]) if "rows" in scenario else TLC
    work = WORK / args.scenario
    sides = {"reference": Reference(folder, scenario, work / "reference"),
             "taxipipe": Ours(folder, scenario, work / "home")}
    if args.store == "warm":
        for side in sides.values():
            side.reset()
            side.run()
    results: dict[str, list] = {name: [] for name in sides}
    for _ in range(args.repeat):
        for name, side in sides.items():
            if args.store == "fresh":
                side.reset()
            results[name].append(side.run())

    def median(name: str, pick) -> float:
        return statistics.median(pick(result) for result in results[name])

    figures = {
        "wall seconds": lambda r: r[0].wall,
        "peak RSS MB": lambda r: r[0].peak_rss_mb,
        "transform+features s": lambda r: r[2]["transform+features"],
        "train step s": lambda r: r[2]["train"],
    }
    print(f"scenario {args.scenario} ({scenario}), store {args.store}, median of {args.repeat}")
    print(f"{'':24}{'reference':>12}{'taxipipe':>12}{'ratio':>10}")
    for label, pick in figures.items():
        theirs, ours = median("reference", pick), median("taxipipe", pick)
        print(f"{label:24}{theirs:12.2f}{ours:12.2f}{ratio(ours, theirs):>10}")
    theirs, ours = results["reference"][0][1], results["taxipipe"][0][1]
    print(f"{'RMSE':24}{theirs:12.4f}{ours:12.4f}{ours - theirs:+10.4f}")
    steps = results["taxipipe"][-1][2]
    print("taxipipe step seconds (last run): " + ", ".join(
        f"{name} {sec:.2f}" for name, sec in steps.items() if name not in {"train", "transform+features"}))


if __name__ == "__main__":
    main()
