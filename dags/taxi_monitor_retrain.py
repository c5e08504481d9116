"""Monthly: monitor the newest published month against the champion, retrain on drift.

The run of logical date 2021-06-01 monitors 2021-02 (the month the training DAG's run of
that date trains on, `taxipipe.partition.scheduled_training_month`) against the champion's
training month. When a `monitor.*` threshold is crossed
(`drifted`), `retrain` trains on the month before the monitored one, validates on the
monitored month, and the pipeline's gate decides whether the new model becomes the
champion. Without a champion yet, `monitor` is skipped with that reason. Params as in taxi_duration_pipeline: `color`, `year`, `month`, `settings`.
Each task is one call into taxipipe.runners.monitor_retrain, as are the tasks of the Prefect flow
`monitor-retrain`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from taxipipe import tracking
from taxipipe.runners import monitor_retrain as jobs
from taxipipe.runners.airflow.adapter import settings_for


def _settings():
    context = get_current_context()
    return settings_for(context["params"], context.get("logical_date") or context["dag_run"].run_after)


@dag(
    dag_id="taxi_monitor_retrain",
    schedule="@monthly",
    start_date=datetime(2009, 3, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params={
        "color": Param(None, type=["null", "string"], enum=[None, "green", "yellow"]),
        "year": Param(None, type=["null", "integer"], minimum=2009, description="month to monitor: year"),
        "month": Param(None, type=["null", "integer"], minimum=1, maximum=12, description="month to monitor"),
        "settings": Param({}, type="object", description="other settings as nested tables"),
    },
    tags=["taxipipe", "monitoring"],
    doc_md=__doc__,
)
def taxi_monitor_retrain() -> None:
    @task
    def monitor():
        """Drift and RMSE of the month against the champion's training month; skipped, saying
        why, while there is no champion to compare with (the run then ends green)."""
        settings = _settings()
        name = settings.mlflow.model_name
        if tracking.champion_version(tracking.client(settings), name) is None:
            raise AirflowSkipException(f"no champion of {name} yet: nothing to monitor until a pipeline "
                                       "run promotes one")
        return jobs.check_month(settings)

    @task.short_circuit
    def drifted(checked: jobs.Record):
        """Go on to retrain only when a threshold was crossed."""
        return checked["drifted"]

    @task
    def retrain():
        """Train on the month before the monitored one; the gate decides the champion."""
        return jobs.retrain(_settings(), "airflow-monitor")

    checked = monitor()
    drifted(checked) >> retrain()


taxi_monitor_retrain()
