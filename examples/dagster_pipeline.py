#!/usr/bin/env python
"""Run the Dagster job once, in this process (`execute_in_process`): no daemon, no webserver.

    python examples/dagster_pipeline.py --year 2021 --month 1

Dagster keeps its runs and logs in HOME/dagster (DAGSTER_HOME), so `make dagster-ui` shows
them. To schedule the job or backfill months, see docs/dagster.md.
"""

from __future__ import annotations

import argparse
import sys

from taxipipe.flags import add_output_flags, add_settings_flags, settings_from
from taxipipe.runners.session import example


def run(args: argparse.Namespace, started: float) -> None:
    """Run the job on the partition the flags name (each op prints its line as it ends)."""
    settings = settings_from(args)
    from taxipipe.runners.dagster.job import run_example

    run_example(settings, started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_settings_flags(parser)
    add_output_flags(parser, 0)
    return example(run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
