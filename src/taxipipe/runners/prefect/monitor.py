"""The monthly monitor-then-retrain job as a Prefect 3 flow: check the month, retrain on drift.

Both tasks are one call into `taxipipe.runners.monitor_retrain`, like the tasks of the Airflow DAG
dags/taxi_monitor_retrain.py. Call `local.configure(home)` before importing this
module when Prefect should keep its state under the project home.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from taxipipe.config import Settings
from taxipipe.partition import scheduled_training_month
from taxipipe.runners.prefect.local import flow_settings
from taxipipe.runners import monitor_retrain as jobs

RUNNER = "prefect-monitor"


@task(name="monitor", task_run_name="monitor", cache_policy=NO_CACHE)
def monitor(settings: Settings) -> jobs.Record:
    """Drift and RMSE of the month against the champion's training month."""
    return jobs.check_month(settings)


@task(name="retrain", task_run_name="retrain", cache_policy=NO_CACHE)
def retrain(settings: Settings) -> jobs.Record:
    """Train on the month before the monitored one; the gate decides the champion."""
    return jobs.retrain(settings, RUNNER)


@flow(name="monitor-retrain", description="Monitor the newest month against the champion; retrain on drift.")
def monitor_and_retrain(color: str | None = None, year: int | None = None, month: int | None = None,
                        config: str | None = None, overrides: dict[str, Any] | None = None,
                        latest: bool = False) -> jobs.Record:
    """Monitor one month (or, with `latest`, the newest published by the scheduled time) and
    retrain when a monitor.* threshold is crossed."""
    if latest:
        newest = scheduled_training_month("", flow_run.scheduled_start_time).shift(1)
        year, month = newest.year, newest.month
    settings = flow_settings(color, year, month, config, overrides)
    checked = monitor(settings)
    return {"monitor": checked, "retrain": retrain(settings) if checked["drifted"] else None}
