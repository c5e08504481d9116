"""The course's published figures beside ours, on green 2021-01 (train) -> 2021-02 (validation).

    python benchmarks/course_numbers.py            # the published rows (the 1000-round one takes minutes)
    python benchmarks/course_numbers.py --kinds    # plus every model kind at its defaults

The DataTalksClub mlops-zoomcamp's 02-experiment-tracking notebook publishes these on
PU_DO + trip_distance through DictVectorizer. Each row runs `taxipipe run` in a fresh home;
the 1000-round XGBoost row also runs the reference pipeline (`--best-iteration`), which scores
the best round as the course did.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from common import REFERENCE, TEMPLATE, TLC, measure, require_inputs


@dataclass
class Row:
    label: str
    flags: list[str]
    published: float | None = None
    params: dict[str, str] = field(default_factory=dict)
    reference: list[str] | None = None


PUBLISHED = [
    Row("LinearRegression (onehot)", ["--model", "linear", "--features", "onehot"], 7.7587),
    Row("XGBoost zoomcamp params, 1000 rounds, early stopping 50 (onehot)",
        ["--features", "onehot", "--preset", "zoomcamp"], 6.30398, params={"N_ESTIMATORS": "1000"},
        reference=["--params", "tuned", "--rounds", "1000", "--early-stopping", "50", "--best-iteration"]),
]
KINDS = [
    Row("xgboost, categorical (the default)", ["--features", "categorical"]),
    Row("xgboost, onehot, seed params", ["--features", "onehot"]),
    Row("xgboost, onehot, zoomcamp preset (30 rounds)", ["--features", "onehot", "--preset", "zoomcamp"]),
    Row("linear, onehot", ["--model", "linear", "--features", "onehot"]),
    Row("random_forest, onehot (50 trees, depth 20)", ["--model", "random_forest", "--features", "onehot"]),
]


def ours(row: Row, home: Path) -> tuple[float, dict[str, float], float]:
    """RMSE, MLflow metrics and wall seconds of `taxipipe run` for `row` in a fresh `home`."""
    env = {"TAXIPIPE_HOME": str(home), **{f"TAXIPIPE_MODEL__PARAMS__{k}": v for k, v in row.params.items()}}
    command = [sys.executable, "-m", "taxipipe", "run", "--year", "2021", "--month", "1",
               "--url-template", str(TLC / TEMPLATE), *row.flags]
    measured = measure(command, env=env, cwd=home.parent)
    run_id = next(line for line in measured.stdout.splitlines() if line.startswith("🆔")).split()[-1]
    from taxipipe import tracking
    from taxipipe.config import load_settings

    metrics = tracking.client(load_settings(overrides={"home": str(home)})).get_run(run_id).data.metrics
    return metrics["rmse"], metrics, measured.wall


def reference(arguments: list[str], work: Path) -> float:
    """The reference pipeline's RMSE with `arguments`."""
    measured = measure([sys.executable, str(REFERENCE),
                        str(TLC / "green_tripdata_2021-01.parquet"), str(TLC / "green_tripdata_2021-02.parquet"),
                        *arguments], cwd=work)
    return json.loads(measured.stdout.strip().splitlines()[-1])["rmse"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", action="store_true", help="also every model kind at its defaults")
    args = parser.parse_args()
    require_inputs()
    rows = PUBLISHED + (KINDS if args.kinds else [])
    print(f"| model | published | taxipipe | reference | best round | wall s |\n|---|---|---|---|---|---|",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="course-numbers-") as scratch:
        for number, row in enumerate(rows):
            score, metrics, wall = ours(row, Path(scratch) / f"home-{number}")
            theirs = f"{reference(row.reference, Path(scratch)):.4f}" if row.reference else ""
            published = f"{row.published}" if row.published is not None else ""
            best = f"{int(metrics['best_iteration'])}" if "best_iteration" in metrics else ""
            print(f"| {row.label} | {published} | {score:.5f} | {theirs} | {best} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
