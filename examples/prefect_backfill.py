#!/usr/bin/env python
"""Backfill several months at once: Prefect tasks on Dask workers (prefect-dask).

    python examples/prefect_backfill.py 2023-02 2023-03                 # a 2-worker LocalCluster
    python examples/prefect_backfill.py 2023-02 2023-03 --scheduler tcp://HOST:8786

Each month trains on its own month (or --train-months N ending at it) and validates on the
next. Settings flags apply to every month.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from taxipipe import console
from taxipipe.flags import add_settings_flags
from taxipipe.errors import TaxipipeError
from taxipipe.runners.prefect import local as prefect_local


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("months", nargs="+", metavar="YYYY-MM", help="the training months")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (no --scheduler)")
    add_settings_flags(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    console.keep_order()
    args = parse_args(argv)
    try:
        run = prefect_local.flow_arguments(args)
    except TaxipipeError as exc:
        console.pipeline_failed(str(exc))
        return 1
    from taxipipe.runners.prefect.backfill import backfill, dask_task_runner, shared_api

    runner = dask_task_runner(run.settings.compute.dask_scheduler, args.workers)
    run.overrides.get("compute", {}).pop("dask_scheduler", None)
    with shared_api():
        state = backfill.with_options(task_runner=runner)(
            months=args.months, config=run.config, overrides=run.overrides, return_state=True)
    if not state.is_completed():
        console.pipeline_failed(state.message or f"the backfill ended in state {state.name}")
        return 1
    for run in state.result():
        champion = " 🏆" if run["champion"] else ""
        console.say(f"📊 {run['window']}: RMSE {run['rmse']:.4f} (MLflow run {run['run_id']}){champion}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
