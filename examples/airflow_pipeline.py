"""Run the Airflow DAG once, in this process, with `dag.test()`: no scheduler, no server.

    python examples/airflow_pipeline.py --year 2021 --month 1

Airflow keeps its metadata database in HOME/airflow (created on first use), never in
~/airflow. To schedule the DAG, open the UI or backfill months, see docs/airflow.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from taxipipe.flags import add_output_flags, add_settings_flags, settings_from
from taxipipe.runners.airflow.adapter import run_example
from taxipipe.runners.session import example

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_settings_flags(parser)
    add_output_flags(parser, 0)
    return example(lambda args, started: run_example(settings_from(args), DAGS_FOLDER, started), parser, argv)


if __name__ == "__main__":
    sys.exit(main())
