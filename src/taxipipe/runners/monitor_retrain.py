"""The monthly monitor-then-retrain job: what the Airflow DAG and the Prefect flow both call.

`check_month` monitors the configured month against the champion; when it crossed a
threshold, `retrain` trains on the month before it and validates on the monitored month
(both published), and the usual gate decides whether the new model becomes the champion.
"""

from __future__ import annotations

from typing import Any

from taxipipe.config import Settings

Record = dict[str, Any]


def check_month(settings: Settings) -> Record:
    """Monitor the configured month; the small record says whether it drifted and why."""
    from taxipipe.serve.monitor import monitor_month

    return monitor_month(settings).record()


def retrain_settings(settings: Settings) -> Settings:
    """The settings of the retrain: the month before the monitored one as training month."""
    month = settings.partition.shift(-1)
    data = settings.data.model_copy(update={"year": month.year, "month": month.month})
    return settings.model_copy(update={"data": data})


def retrain(settings: Settings, runner: str) -> Record:
    """Run the whole pipeline on `retrain_settings`; return what deploy decided."""
    from taxipipe.runners.simple import SimplePipeline

    records = SimplePipeline(retrain_settings(settings), runner=runner).run()
    deployed = records["deploy"]
    return {"partition": retrain_settings(settings).partition.key, "run_id": records["train"]["run_id"],
            "rmse": records["train"]["rmse"], "version": deployed["version"], "champion": deployed["champion"],
            "summary": deployed["summary"]}
