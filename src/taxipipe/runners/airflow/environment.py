"""Where Airflow keeps its state under a home, as environment variables.

What the in-process runs on this machine and the servers of `taxipipe stack` share: Airflow's
home and DAG folder, without the example DAGs.
"""

from __future__ import annotations

from pathlib import Path


def airflow_environment(airflow_home: Path, dags_folder: Path) -> dict[str, str]:
    """Airflow with its state in `airflow_home`, the DAGs of `dags_folder` and no example DAGs."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
