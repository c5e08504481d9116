"""What every step shares: the run's `StepContext`, the record types, and logging to a run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from taxipipe.config import Settings
from taxipipe.layout import Layout
from taxipipe.partition import Partition

Record = dict[str, Any]
Upstream = Mapping[str, Record]
ROLES = ("train", "validation")
#: Record fields that say how a run went rather than what it produced (ignored when comparing).
VOLATILE_FIELDS = frozenset({"seconds", "finished_at", "timings", "summary", "downloaded", "deployed_at"})
#: The libraries the steps import as they run (about 4 s of CPU in a fresh interpreter). Engines
#: that fork a process per step import them once in the process they fork from: Dagster's
#: executor (`runners/dagster.py`) and the stack's Airflow scheduler (`stack/airflow_scheduler.py`).
STEP_LIBRARIES = ("pandas", "pyarrow.parquet", "pandera.pandas", "xgboost", "mlflow.pyfunc",
                  "mlflow.store.tracking.sqlalchemy_store")


@dataclass(frozen=True)
class StepContext:
    """What every step needs: the settings, which runner runs it, extra run tags, the month of
    a per-month node, and the run's compute mode once `features` has chosen it."""

    settings: Settings
    runner: str = "simple"
    tags: Mapping[str, str] = field(default_factory=dict)
    month: Partition | None = None
    compute: str | None = None

    @property
    def layout(self) -> Layout:
        return Layout(self.settings.home, self.settings.partition, self.settings.data.train_months,
                      streamed=self.compute_mode != "memory")

    @property
    def compute_mode(self) -> str:
        """memory, external or dask: the mode `features` chose and recorded (see `decided`), or
        the one `taxipipe.compute.choose` picks now."""
        if self.compute is not None:
            return self.compute
        from taxipipe.compute import choose

        downloads = Layout(self.settings.home, self.settings.partition)
        return choose(self.settings, [downloads.download(month) for month in self.settings.months])

    def decided(self, upstream: Upstream) -> StepContext:
        """This context with the compute mode an upstream step recorded.

        The mode depends on the memory free when it is chosen, so it is chosen once, by
        `features`, and every later step (in whatever process) reads it from the records.
        """
        recorded = next((record["compute"] for record in upstream.values() if record.get("compute")), None)
        return self if recorded is None or self.compute is not None else replace(self, compute=recorded)

    def raw_paths(self, role: str) -> list[tuple[str, Path]]:
        """(month label, download) of the window (role train) or of the validation month."""
        layout = Layout(self.settings.home, self.settings.partition)
        settings = self.settings
        months = settings.training_months if role == "train" else (settings.validation_month,)
        return [(month.label, layout.download(month)) for month in months]

    def clean_path(self, role: str) -> Path:
        return self.layout.train_clean if role == "train" else self.layout.validation_clean

    def features_path(self, role: str) -> Path:
        return self.layout.train_features if role == "train" else self.layout.validation_features



def _log(client: Any, run_id: str, params: Record | None = None, metrics: Record | None = None,
         tags: Record | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )
