"""The stack's Airflow scheduler: `airflow scheduler ARGS`, with the steps' libraries imported first.

The LocalExecutor forks its workers from the scheduler, and each worker forks a process per
task, so a task starts with pandas, PyArrow, pandera, XGBoost and MLflow loaded instead of
importing them again (`steps.STEP_LIBRARIES`, as Dagster's executor preloads them).
"""

from __future__ import annotations

import importlib
import sys

from taxipipe.steps import STEP_LIBRARIES


def main(args: list[str]) -> None:
    """Import the steps' libraries, then run Airflow's command line as `airflow scheduler ARGS`."""
    from airflow.__main__ import main as airflow

    for module in STEP_LIBRARIES:
        importlib.import_module(module)
    sys.argv = ["airflow", "scheduler", *args]
    airflow()


if __name__ == "__main__":
    main(sys.argv[1:])
