"""What every step shares: the run's `StepContext`, the record types, and logging to a run."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypedDict

from taxipipe.config import Settings
from taxipipe.layout import Layout
from taxipipe.partition import Partition

Record = dict[str, Any]
Upstream = Mapping[str, Record]


class StepRecord(TypedDict, total=False):
    """What every step's record holds besides its own fields: a line for the console, and what
    `pipeline.run_step` adds (the step's seconds, when it finished, the times up to it; when
    tracking is a server, every shared file so far with its sha256 and bytes, and the bytes this
    step moved: `downloaded` from the source, `fetched` from and `uploaded` to the server).

    Each step's record type extends it; records stay small JSON-able dicts, so every engine
    carries them (XCom, Prefect results, Dagster outputs, make's lock file).
    """

    summary: str
    seconds: float
    finished_at: float
    timings: dict[str, float]
    shared_files: dict[str, dict[str, Any]]
    transfers: dict[str, dict[str, int]]

ROLES = ("train", "validation")
#: Record fields that say how a run went rather than what it produced (ignored when comparing).
VOLATILE_FIELDS = frozenset({"seconds", "finished_at", "timings", "summary", "downloaded", "deployed_at",
                             "shared_files", "transfers"})
#: The libraries the steps import as they run (about 4 s of CPU in a fresh interpreter). Engines
#: that fork a process per step import them once in the process they fork from: Dagster's
#: executor (`runners/dagster/job.py`) and the stack's Airflow scheduler (`runners/airflow/scheduler.py`).
STEP_LIBRARIES = ("pandas", "pyarrow.parquet", "pandera.pandas", "xgboost", "mlflow.pyfunc",
                  "mlflow.store.tracking.sqlalchemy_store")


@dataclass(frozen=True)
class StepContext:
    """What every step needs: the settings, which runner runs it, extra run tags, the month of a
    per-month node, and the key that names the run's files in the tracking server's artifact
    store (`tracking.shared_files`): an engine whose steps run in several processes gives its own
    run id (`run_key_of`), so every step of one run, and every retry, uses the same key."""

    settings: Settings
    runner: str = "simple"
    tags: Mapping[str, str] = field(default_factory=dict)
    month: Partition | None = None
    run_key: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def layout(self) -> Layout:
        return Layout(self.settings.home, self.settings.partition, self.settings.data.train_months)

    def raw_paths(self, role: str) -> list[tuple[str, Path]]:
        """(month label, download) of the window (role train) or of the validation month."""
        settings = self.settings
        months = settings.training_months if role == "train" else (settings.validation_month,)
        return [(month.label, self.layout.download(month)) for month in months]

    def clean_path(self, role: str) -> Path:
        return self.layout.train_clean if role == "train" else self.layout.validation_clean

    def features_path(self, role: str) -> Path:
        return self.layout.train_features if role == "train" else self.layout.validation_features


def run_key_of(*run_ids: str) -> str:
    """The run key of the engine run named by `run_ids` (such as a DAG id and a run id): the same
    in every process, and a plain folder name whatever characters the ids hold."""
    return hashlib.sha256("\0".join(run_ids).encode()).hexdigest()[:16]
