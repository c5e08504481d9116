"""Where every file lives under the home directory, keyed by partition.

    home/
      downloads/{color}_tripdata_{YYYY-MM}.parquet   raw TLC months (kept across runs)
      partitions/{color}/{YYYY-MM}/                   intermediates of one training month
      deployments/{color}_{YYYY-MM}.json              what deploy decided
      mlflow/mlflow.db, mlflow/artifacts/             the embedded MLflow store
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from taxipipe.partition import Partition


@dataclass(frozen=True)
class Layout:
    """The file names of one training partition (its validation month is the next one)."""

    home: Path
    partition: Partition

    @property
    def validation_partition(self) -> Partition:
        return self.partition.next()

    def download(self, partition: Partition) -> Path:
        return self.home / "downloads" / f"{partition.color}_tripdata_{partition.label}.parquet"

    @property
    def train_raw(self) -> Path:
        return self.download(self.partition)

    @property
    def validation_raw(self) -> Path:
        return self.download(self.validation_partition)

    @property
    def workdir(self) -> Path:
        return self.home / "partitions" / self.partition.color / self.partition.label

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
        return self.workdir / "train_features.npz"

    @property
    def validation_features(self) -> Path:
        return self.workdir / "validation_features.npz"

    @property
    def booster(self) -> Path:
        return self.workdir / "booster.ubj"

    @property
    def deployment_record(self) -> Path:
        return self.home / "deployments" / f"{self.partition.color}_{self.partition.label}.json"


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only on success.

    A crash or an exception leaves `target` as it was and removes the temporary file, so no
    later run ever sees half a file under the real name.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> None:
    """Write a small text file atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


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
