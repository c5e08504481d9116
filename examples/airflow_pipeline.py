"""Run the Airflow DAG once, in this process, with `dag.test()`: no scheduler, no server.

    python examples/airflow_pipeline.py --year 2021 --month 1

Airflow keeps its metadata database in HOME/airflow (created on first use), never in
~/airflow. To schedule the DAG, open the UI or backfill months, see docs/airflow.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from taxipipe import console, walltime
from taxipipe.flags import add_output_flags, add_settings_flags, settings_from
from taxipipe.errors import TaxipipeError
from taxipipe.pipeline import STEPS
from taxipipe.runners.airflow import adapter as airflow_runner

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
INSTALL_HINT = "Airflow is not installed here: run `make env` (or `uv sync --extra airflow`)"


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_settings_flags(parser)
    add_output_flags(parser, 0)
    args = parser.parse_args(argv)
    console.configure(args.verbosity)
    try:
        settings = settings_from(args)
    except TaxipipeError as exc:
        console.pipeline_failed(str(exc))
        return 1
    airflow_home = settings.home / "airflow"
    airflow_runner.use_airflow_home(airflow_home, DAGS_FOLDER)
    try:
        import airflow  # noqa: F401
    except ImportError:
        console.pipeline_failed(INSTALL_HINT)
        return 1

    console.header(airflow_runner.RUNNER, settings, target=STEPS[-1].name)
    try:
        airflow_runner.migrate_once(airflow_home)
        outcome = airflow_runner.run_in_process(settings, DAGS_FOLDER)
    except TaxipipeError as exc:
        console.pipeline_failed(str(exc))
        return 1
    for task_id in outcome.failed:
        console.task_failed(task_id, "the task log above says why")
    if outcome.state != "success":
        console.pipeline_failed(f"the DAG run ended '{outcome.state}'")
        return 1
    walltime.record(settings, outcome.records, started)
    console.final_summary(outcome.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
