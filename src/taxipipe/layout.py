"""Where every file lives under the home directory, keyed by partition.

    home/
      downloads/{color}_tripdata_{YYYY-MM}.parquet   raw TLC months (kept across runs)
      downloads/{color}_tripdata_{YYYY-MM}.parquet.source   the URL each came from
      partitions/{color}/{YYYY-MM}/                   intermediates of one training month
      partitions/{color}/{YYYY-MM}..{YYYY-MM}/        ... of a window of several months
      deployments/{color}_{YYYY-MM}.json              what deploy decided (window: first..last)
      predictions/{color}/{YYYY-MM}.parquet           what `taxipipe predict` scored
      mlflow/mlflow.db, mlflow/artifacts/             the embedded MLflow store
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from taxipipe.partition import Partition
from taxipipe.window import training_window, window_label


@dataclass(frozen=True)
class Layout:
    """The file names of one training window (its validation month is the one after it).

    `partition` is the window's last month. `streamed` names the feature files of the
    engines that read them a row group at a time (parquet) instead of whole (npz).
    """

    home: Path
    partition: Partition
    train_months: int = 1
    streamed: bool = False

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
        return self.workdir / ("train_features.parquet" if self.streamed else "train_features.npz")

    @property
    def validation_features(self) -> Path:
        return self.workdir / ("validation_features.parquet" if self.streamed else "validation_features.npz")

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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Files this package writes get the permissions of any new file (0666 less the umask).
FILE_MODE = 0o666 & ~_umask()
PART_MARK = ".part"
_WRITER = re.compile(rf"\.(\d+)-\w+{re.escape(PART_MARK)}")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only on success.

    The temporary name ends in `.part`, so no glob for the real files' suffix lists it. A crash or an exception leaves `target` as it was and removes the temporary file, so no
    later run ever sees half a file under the real name. The temporary name carries the
    writer's process id, so a later run can tell the leftovers of a killed process
    (`remove_stale_parts`) from files another process is still writing.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=PART_MARK, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            tmp.chmod(FILE_MODE)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_parts(home: Path) -> list[Path]:
    """Delete the temporary files of killed writers under the home; return what went."""
    removed = []
    for folder in (home / "downloads", home / "partitions", home / "deployments", home / "predictions",
                   home / "state"):
        for path in folder.rglob(f".*{PART_MARK}*") if folder.is_dir() else ():
            writer = _WRITER.search(path.name)
            if not process_alive(writer.group(1) if writer else ""):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def process_alive(pid: str) -> bool:
    """Whether `pid` names a running process (False for names without one)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
