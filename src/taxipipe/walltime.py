"""The wall time of a whole run, as its user waits for it, recorded on the run's MLflow run.

A runner takes `time.time()` when it starts (before it starts its engine, where it starts
one) and calls `record` after its last step. The metric lands on the train step's MLflow run,
beside the step times, so `taxipipe compare` can show what the engine cost beyond the steps.
A run whose train step did not run (make found it up to date, Prefect took it from its cache)
made no new MLflow run: nothing is recorded then.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from taxipipe.config import Settings

WALL_METRIC = "wall_seconds"


def record(settings: Settings, records: Mapping[str, Any], started: float) -> float | None:
    """Log the seconds since `started` as `wall_seconds` on the MLflow run this run's train made.

    Returns the seconds logged, or None when this run made no MLflow run.
    """
    from taxipipe import tracking

    run_id = (records.get("train") or {}).get("run_id")
    if run_id is None:
        return None
    mlflow_client = tracking.client(settings)
    if mlflow_client.get_run(run_id).info.start_time < started * 1000:
        return None
    seconds = round(time.time() - started, 3)
    mlflow_client.log_metric(run_id, WALL_METRIC, seconds)
    return seconds
