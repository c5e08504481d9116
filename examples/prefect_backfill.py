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

from taxipipe.flags import add_settings_flags
from taxipipe.runners.prefect import local as prefect_local
from taxipipe.runners.session import example


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("months", nargs="+", metavar="YYYY-MM", help="the training months")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (no --scheduler)")
    add_settings_flags(parser)
    return parser


def run(args: argparse.Namespace, started: float) -> None:
    """Train every month on the Dask cluster; one line per month."""
    backfill_run = prefect_local.flow_arguments(args)
    from taxipipe.runners.prefect.backfill import run_example

    run_example(backfill_run, args.months, args.workers)


def main(argv: Sequence[str] | None = None) -> int:
    return example(run, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
