"""Where every file lives under the home directory, keyed by partition.

    home/
      downloads/{color}_tripdata_{YYYY-MM}.parquet   raw TLC months (kept across runs)
      downloads/{color}_tripdata_{YYYY-MM}.parquet.source   the URL each came from
      downloads/taxi_zone_lookup.csv                  the TLC zone names (serve.zones), with its .source
      partitions/{color}/{YYYY-MM}/                   intermediates of one training month
      partitions/{color}/{YYYY-MM}..{YYYY-MM}/        ... of a window of several months
      deployments/{color}_{YYYY-MM}.json              what deploy decided (window: first..last)
      predictions/{color}/{YYYY-MM}.parquet           what `taxipipe predict` scored
      mlflow/mlflow.db, mlflow/artifacts/             the embedded MLflow store
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from taxipipe.partition import Partition
from taxipipe.window import training_window, window_label


@dataclass(frozen=True)
class Layout:
    """The file names of one training window (its validation month is the one after it).

    `partition` is the window's last month.
    """

    home: Path
    partition: Partition
    train_months: int = 1

    @property
    def window(self) -> tuple[Partition, ...]:
        return training_window(self.partition, self.train_months)

    @property
    def validation_partition(self) -> Partition:
        return self.partition.next()

    def download(self, partition: Partition) -> Path:
        return self.home / "downloads" / f"{partition.color}_tripdata_{partition.label}.parquet"

    def downloads(self, months: Iterable[Partition]) -> list[Path]:
        """The months' cached files and the records of where each came from."""
        return [path for month in months for path in (self.download(month), source_record(self.download(month)))]

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
    def model(self) -> Path:
        """The trained model, in the format of its kind."""
        return self.workdir / "model.bin"

    @property
    def deployment_record(self) -> Path:
        return self.home / "deployments" / f"{self.partition.color}_{window_label(self.window)}.json"


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
