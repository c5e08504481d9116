"""Where the engines keep their state under a home, as environment variables.

One place for what the runners on this machine and the servers of `taxipipe stack` share:
Prefect's database and results under PREFECT_HOME, offline (prefect 3.7.7 puts its memo store
and result storage in ~/.prefect whatever PREFECT_HOME says, so their paths are set too, and its
client reads only DO_NOT_TRACK before it announces and sends usage data from a terminal), and
Airflow's home and DAG folder without the example DAGs.
"""

from __future__ import annotations

from pathlib import Path


def prefect_environment(prefect_home: Path) -> dict[str, str]:
    """Prefect with everything it writes in `prefect_home`, and no analytics or telemetry."""
    return {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_MEMO_STORE_PATH": str(prefect_home / "memo_store.toml"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(prefect_home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
        "DO_NOT_TRACK": "1",
    }


def airflow_environment(airflow_home: Path, dags_folder: Path) -> dict[str, str]:
    """Airflow with its state in `airflow_home`, the DAGs of `dags_folder` and no example DAGs."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
