"""Where Prefect keeps its state under a home, as environment variables.

What the runs on this machine and the servers of `taxipipe stack` share: Prefect's database and
results under PREFECT_HOME, offline (prefect 3.7.7 puts its memo store and result storage in
~/.prefect whatever PREFECT_HOME says, so their paths are set too, and its client reads only
DO_NOT_TRACK before it announces and sends usage data from a terminal).
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
