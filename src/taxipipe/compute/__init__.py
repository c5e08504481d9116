"""Where and how the window is trained: in memory, in external memory, or on a Dask cluster.

- `memory` (compute.engine = local): the matrices are read whole; fastest while they fit.
- `external` (local, when compute.external_memory is set or the estimate from the parquet
  metadata exceeds compute.memory_gb): row groups stream through XGBoost's
  ExtMemQuantileDMatrix, so memory is bounded by a row group plus the validation month.
- `dask` (compute.engine = dask): this process sends the encoded window to the cluster at
  compute.dask_scheduler (empty: a LocalCluster) a row group at a time, xgboost.dask trains.

Every mode yields the same kind of booster, logged in the same pyfunc model.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal, Sequence

from taxipipe.compute.trained import Trained
from taxipipe.config import Settings
from taxipipe.errors import ConfigError

Mode = Literal["memory", "external", "dask"]
#: Peak bytes a training row (window or validation) costs in memory, measured on 3M-row months
#: (1.15 GB for 5.8M rows, of which about 0.4 GB is the interpreter, MLflow and XGBoost).
BYTES_PER_ROW = 150
#: No TLC month compresses below this many bytes a row (they take 15-20): file sizes bound the
#: rows, so windows far below the limit are decided without reading any parquet footer.
MIN_FILE_BYTES_PER_ROW = 2
GB = 1 << 30


def check(settings: Settings) -> None:
    """Refuse, before any work, what the engines cannot do."""
    compute, mode = settings.compute, settings.model.features
    if settings.model.kind != "xgboost" and (compute.engine == "dask" or compute.external_memory):
        raise ConfigError(f"model.kind = {settings.model.kind} trains in memory only; external memory and "
                          "--engine dask train XGBoost (model.kind = xgboost)")
    if mode != "categorical" and compute.engine == "dask":
        raise ConfigError("compute.engine = dask trains on categorical features only; use --features "
                          "categorical or --engine local")
    if compute.engine == "dask":
        from taxipipe.compute.dask import tls_paths

        tls_paths(settings)
    if mode != "categorical" and compute.external_memory:
        raise ConfigError("compute.external_memory streams categorical features only; use --features "
                          "categorical or set compute.external_memory = false")


def memory_limit_bytes(settings: Settings) -> int:
    """compute.memory_gb, or half the memory available now."""
    if settings.compute.memory_gb is not None:
        return int(settings.compute.memory_gb * GB)
    return available_bytes() // 2


def available_bytes() -> int:
    """Memory available to a new process now (MemAvailable on Linux, free pages elsewhere)."""
    import os

    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def estimate_bytes(paths: Sequence[Path]) -> int | None:
    """Peak memory of training in memory on these months, from their parquet metadata.

    None when a month is not downloaded yet.
    """
    if not all(path.exists() for path in paths):
        return None
    return BYTES_PER_ROW * sum(_rows(path, path.stat().st_mtime_ns) for path in paths)


@functools.lru_cache(maxsize=256)
def _rows(path: Path, mtime_ns: int) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:
        return 0


def choose(settings: Settings, months: Sequence[Path]) -> Mode:
    """The mode that trains on `months` (the window's downloads and the validation month)."""
    check(settings)
    if settings.compute.engine == "dask":
        return "dask"
    if settings.compute.external_memory:
        return "external"
    limit = memory_limit_bytes(settings)
    if all(path.exists() for path in months):
        bound = sum(path.stat().st_size for path in months) // MIN_FILE_BYTES_PER_ROW * BYTES_PER_ROW
        if bound <= limit:
            return "memory"
    needed = estimate_bytes(months)
    if needed is None or needed <= limit:
        return "memory"
    if settings.model.features != "categorical" or settings.model.kind != "xgboost":
        raise ConfigError(
            f"the window needs about {needed / GB:.1f} GB in memory, more than compute.memory_gb "
            f"({limit / GB:.1f} GB), and onehot features only train in memory; "
            "use --features categorical or raise compute.memory_gb")
    return "external"


def train(settings: Settings, mode: Mode, encoder: Any, train_path: Path, validation_path: Path,
          cache_dir: Path, callbacks: Sequence[Any] = ()) -> Trained:
    """Train the configured booster on the window with `mode`.

    `callbacks` watch the rounds in this process (progress); on Dask the rounds run on the
    workers, so they are not passed there.
    """
    if mode == "dask":
        from taxipipe.compute.dask import train_on_cluster

        return train_on_cluster(settings, encoder, train_path, validation_path)
    if mode == "external":
        from taxipipe.compute.external import train_external

        return train_external(settings, encoder, train_path, validation_path, cache_dir, callbacks)
    from taxipipe.compute.local import train_in_memory

    return train_in_memory(settings, encoder, train_path, validation_path, callbacks)
