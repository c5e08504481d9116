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
from typing import Sequence

from taxipipe.flags import add_settings_flags
from taxipipe.runners.prefect import local as prefect_local
from taxipipe.runners.session import example


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_settings_flags(parser)
    parser.add_argument("--refresh", action="store_true",
                        help="recompute every step, ignoring the cache")
    parser.add_argument("--cleanup", action="store_true",
                        help="remove the partition's intermediates at the end (the next run redoes them)")
    parser.add_argument("--serve", action="store_true",
                        help="serve the monthly deployment until interrupted instead of running once")
    return parser


def run(args: argparse.Namespace, started: float) -> None:
    """One flow run, or serve the monthly deployment until interrupted (`--serve`)."""
    flow_run = prefect_local.flow_arguments(args)
    from taxipipe.runners.prefect.flow import monthly_deployment, run_example

    if args.serve:
        from prefect import serve

        serve(monthly_deployment(flow_run.config, flow_run.overrides))
    else:
        run_example(flow_run, args.refresh, args.cleanup, started)


def main(argv: Sequence[str] | None = None) -> int:
    return example(run, parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
