#!/usr/bin/env python
"""Run the Dagster job once, in this process (`execute_in_process`): no daemon, no webserver.

    python examples/dagster_pipeline.py --year 2021 --month 1

Dagster keeps its runs and logs in HOME/dagster (DAGSTER_HOME), so `make dagster-ui` shows
them. To schedule the job or backfill months, see docs/dagster.md.
"""

from __future__ import annotations

import argparse
import sys
import time

from taxipipe import console, walltime
from taxipipe.flags import add_output_flags, add_settings_flags, settings_from
from taxipipe.config import Settings
from taxipipe.errors import TaxipipeError
from taxipipe.pipeline import STEPS


def run(settings: Settings, started: float) -> int:
    """Run the job on the partition of `settings` (each op prints its line as it ends); print
    the common lines; record the wall time since `started`; the exit status."""
    from taxipipe.runners.dagster import job as dagster_runner

    console.header(dagster_runner.RUNNER, settings, target=STEPS[-1].name)
    records, failed = dagster_runner.outcome(dagster_runner.run_in_process(settings))
    for name, reason in failed.items():
        console.task_failed(name, reason)
    if failed:
        console.pipeline_failed(f"the Dagster run failed at {', '.join(failed)}")
        return 1
    walltime.record(settings, records, started)
    console.final_summary(records)
    return 0


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_settings_flags(parser)
    add_output_flags(parser, 0)
    args = parser.parse_args(argv)
    console.configure(args.verbosity)
    try:
        return run(settings_from(args), started)
    except TaxipipeError as exc:
        console.pipeline_failed(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
