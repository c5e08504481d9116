#!/usr/bin/env python
"""The pipeline as a Prefect 3 flow, on this machine.

    python examples/prefect_pipeline.py --year 2021 --month 1     # one run, temporary server
    python examples/prefect_pipeline.py --refresh                 # ignore Prefect's cache
    python examples/prefect_pipeline.py --serve                   # the monthly deployment

Prefect keeps its database and the cached task results under {home}/prefect. With
PREFECT_API_URL unset each run starts a temporary Prefect server; set it to use a server
started with `make prefect-server` (docs/prefect.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from taxipipe import console, walltime
from taxipipe.flags import add_settings_flags
from taxipipe.errors import TaxipipeError
from taxipipe.runners.prefect import local as prefect_local


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_settings_flags(parser)
    parser.add_argument("--refresh", action="store_true",
                        help="recompute every step, ignoring the cache")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove the partition's intermediates at the end (the next run redoes them)")
    parser.add_argument("--serve", action="store_true",
                        help="serve the monthly deployment until interrupted instead of running once")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    console.keep_order()
    started = time.time()
    args = parse_args(argv)
    try:
        run = prefect_local.flow_arguments(args)
    except TaxipipeError as exc:
        console.pipeline_failed(str(exc))
        return 1
    from taxipipe.runners.prefect.flow import ml_pipeline, monthly_deployment

    if args.serve:
        from prefect import serve

        serve(monthly_deployment(run.config, run.overrides))
        return 0

    data = run.settings.data
    state = ml_pipeline(color=data.color, year=data.year, month=data.month, config=run.config,
                        overrides=run.overrides, refresh=args.refresh, cleanup=args.cleanup, return_state=True)
    if not state.is_completed():
        console.pipeline_failed(state.message or f"the flow run ended in state {state.name}")
        return 1
    walltime.record(run.settings, state.result(), started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
