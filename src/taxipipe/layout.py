"""The names of the files taxipipe writes under the home directory.

    home/
      downloads/{color}_tripdata_{YYYY-MM}.parquet   raw TLC months (kept across runs)
      downloads/{color}_tripdata_{YYYY-MM}.parquet.source   the URL each came from
      downloads/taxi_zone_lookup.csv                  the TLC zone names (serve.zones), with its .source
      partitions/{color}/{YYYY-MM}/                   intermediates of one training month
      partitions/{color}/{YYYY-MM}..{YYYY-MM}/        ... of a window of several months
      deployments/{color}_{YYYY-MM}.json              what deploy decided (window: first..last)
      predictions/{color}/{YYYY-MM}.parquet           what `taxipipe predict` scored
      reports/monitor_{color}_{YYYY-MM}.html          what `taxipipe monitor` found
      metrics/taxipipe_monitor.prom                   the last monitor verdict, for /metrics
      state/make.lock, state/make.owner               the home's run lock and its holder
      state/{color}/{YYYY-MM}.lock.json               the make runner's record of a window
      mlflow/mlflow.db, mlflow/artifacts/             the embedded MLflow store

`Home` names the files of the whole home, `Layout` adds those of one training window. The
engines keep their own state in folders of their own (each engine folder's `environment.py`
under `runners/`), and the stack its servers' (`stack/state.py`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from taxipipe.partition import Partition
from taxipipe.window import training_window, window_label

#: The TLC's name of its zone table, which the download cache keeps under the same name.
ZONE_FILE = "taxi_zone_lookup.csv"


@dataclass(frozen=True)
class Home:
    """The file names of the home that belong to no training window."""

    home: Path

    def download(self, partition: Partition) -> Path:
        return self.home / "downloads" / f"{partition.color}_tripdata_{partition.label}.parquet"

    def downloads(self, months: Iterable[Partition]) -> list[Path]:
        """The months' cached files and the records of where each came from."""
        return [path for month in months for path in (self.download(month), source_record(self.download(month)))]

    @property
    def zone_table(self) -> Path:
        return self.home / "downloads" / ZONE_FILE

    def predictions(self, partition: Partition) -> Path:
        """What `taxipipe predict` scored of the month `partition`."""
        return self.home / "predictions" / partition.color / f"{partition.label}.parquet"

    def monitor_report(self, partition: Partition) -> Path:
        return self.home / "reports" / f"monitor_{partition.color}_{partition.label}.html"

    @property
    def monitor_verdict(self) -> Path:
        """The Prometheus text file of the last monitor verdict."""
        return self.home / "metrics" / "taxipipe_monitor.prom"

    @property
    def state(self) -> Path:
        return self.home / "state"

    @property
    def run_lock(self) -> Path:
        """The home's run lock (`safety.home_lock`); `run_lock_owner` names its holder."""
        return self.state / "make.lock"

    @property
    def run_lock_owner(self) -> Path:
        return self.state / "make.owner"

    @property
    def mlflow_store(self) -> Path:
        """The embedded MLflow store's database; its artifacts live beside it."""
        return self.home / "mlflow" / "mlflow.db"

    @property
    def written_folders(self) -> tuple[Path, ...]:
        """The folders taxipipe writes files into atomically (MLflow's own are not among them)."""
        return (self.home / "downloads", self.home / "partitions", self.home / "deployments",
                self.home / "predictions", self.state)


@dataclass(frozen=True)
class Layout(Home):
    """The file names of one training window (its validation month is the one after it).

    `partition` is the window's last month.
    """

    partition: Partition
    train_months: int = 1

    @property
    def window(self) -> tuple[Partition, ...]:
        return training_window(self.partition, self.train_months)

    @property
    def validation_partition(self) -> Partition:
        return self.partition.next()

    @property
    def train_raw(self) -> Path:
        return self.download(self.partition)

    @property
    def validation_raw(self) -> Path:
        return self.download(self.validation_partition)

    @property
    def workdir(self) -> Path:
        return self.home / "partitions" / self.partition.color / window_label(self.window)

    @property
    def train_clean(self) -> Path:
        return self.workdir / "train_clean.parquet"

    @property
    def validation_clean(self) -> Path:
        return self.workdir / "validation_clean.parquet"

    @property
    def encoder(self) -> Path:
        return self.workdir / "encoder.json"

    @property
    def train_features(self) -> Path:
        """The window's encoded rides, in the format of the compute mode `features` chose
        (`taxipipe.compute`): one matrix (npz) in memory, parquet row groups otherwise."""
        return self.workdir / "train_features.bin"

    @property
    def validation_features(self) -> Path:
        """The validation month's encoded rides, in the format of `train_features`."""
        return self.workdir / "validation_features.bin"

    @property
    def xgboost_cache(self) -> Path:
        """External memory's quantised pages while training (removed after it)."""
        return self.workdir / "xgboost-cache"

    @property
    def model(self) -> Path:
        """The trained model, in the format of its kind."""
        return self.workdir / "model.bin"

    @property
    def deployment_record(self) -> Path:
        return self.home / "deployments" / f"{self.partition.color}_{window_label(self.window)}.json"

    @property
    def make_state(self) -> Path:
        """The make runner's record of what each step of the window saw and made."""
        return self.state / self.partition.color / f"{window_label(self.window)}.lock.json"


def source_record(download: Path) -> Path:
    """The file beside a cached download that records the URL it came from."""
    return download.with_name(download.name + ".source")


def remove(targets: Iterable[Path]) -> dict[Path, int]:
    """Delete files and directory trees; return every file removed with its size in bytes."""
    removed: dict[Path, int] = {}
    for target in targets:
        if target.is_dir():
            removed.update({path: path.stat().st_size for path in target.rglob("*") if path.is_file()})
            shutil.rmtree(target)
        elif target.exists():
            removed[target] = target.stat().st_size
            target.unlink()
    return removed
