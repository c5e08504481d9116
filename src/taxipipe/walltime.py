"""The wall time of a whole run, as its user waits for it, recorded on the run's MLflow run.

A runner takes `time.time()` when it starts (before it starts its engine, where it starts
one) and calls `record` after its last step. The metric lands on the train step's MLflow run,
beside the step times, so `taxipipe compare` can show what the engine cost beyond the steps.
A run whose train step did not run (make found it up to date, Prefect took it from its cache)
made no new MLflow run: nothing is recorded then.

The steps before train that this run did not run (make found them up to date, Prefect took
them from its cache) still hand train their records, with the times of the run that made
them; the tag `taxipipe.reused_steps` names them, so their times are not counted as this run's.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from taxipipe.config import Settings

WALL_METRIC = "wall_seconds"
REUSED_TAG = "taxipipe.reused_steps"


def record(settings: Settings, records: Mapping[str, Any], started: float) -> float | None:
    """Log the seconds since `started` as `wall_seconds` on the MLflow run this run's train made,
    and tag it with the steps whose records came from an earlier run.

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
    mlflow_client.set_tag(run_id, REUSED_TAG, ",".join(reused_steps(records, started)))
    return seconds


def reused_steps(records: Mapping[str, Any], started: float) -> list[str]:
    """The steps, in the order of `records`, with a record that finished before `started`."""
    reused: list[str] = []
    for node, value in records.items():
        for record in value if isinstance(value, list) else [value]:
            step = node.split("[")[0]
            if record.get("finished_at", 0.0) < started and step not in reused:
                reused.append(step)
    return reused
