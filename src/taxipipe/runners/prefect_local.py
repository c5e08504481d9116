"""Prefect on this machine: its state under the project home, and the monthly deployment.

Prefect reads its settings once, when it is first imported: call `configure(home)` before
anything imports prefect (this module does not import it at load time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEPLOYMENT_NAME = "monthly-local"
#: 06:00 on the 15th of every month: by then TLC has published the month before last.
MONTHLY_CRON = "0 6 15 * *"


def local_environment(home: Path) -> dict[str, str]:
    """Prefect settings for an offline run with its database in {home}/prefect."""
    prefect_home = home / "prefect"
    return {
        "PREFECT_HOME": str(prefect_home),
        # prefect 3.7.7 puts these two in ~/.prefect whatever PREFECT_HOME says
        "PREFECT_SERVER_MEMO_STORE_PATH": str(prefect_home / "memo_store.toml"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(prefect_home / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }


def configure(home: Path) -> None:
    """Apply `local_environment`; variables already set win (PREFECT_API_URL of a server...)."""
    for name, value in local_environment(home).items():
        os.environ.setdefault(name, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def monthly_deployment(config: str | None = None,
                       overrides: dict[str, Any] | None = None) -> RunnerDeployment:
    """The flow served from this process (`--serve`), monthly, on the newest published month.

    `config` and `overrides` become the deployment's default parameters, so the served runs
    use the settings the process was started with (its --home, --url-template...).
    """
    from prefect.deployments.runner import EntrypointType

    from taxipipe.runners.prefect_flow import ml_pipeline

    parameters = {"latest": True, "config": config, "overrides": overrides or {}}
    return ml_pipeline.to_deployment(
        name=DEPLOYMENT_NAME, cron=MONTHLY_CRON, parameters=parameters, tags=["taxipipe"],
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="Retrain on the newest published month; move 'champion' if it is better.",
    )
