"""Training on a Dask cluster: the encoded window goes to the workers, xgboost.dask trains.

The cluster is the scheduler at compute.dask_scheduler (tcp://HOST:PORT, or tls://HOST:PORT
with the certificates in compute.dask_tls_dir), or, when that is empty, a LocalCluster sized
to this machine that lives as long as the training. This process reads the encoded window a
row group at a time and sends each to the cluster, so workers on other hosts need no shared
disk. The booster comes back to this process and is saved and served like one trained in
memory. (Imported only to train.)
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from taxipipe.compute.trained import Trained
from taxipipe.config import Settings
from taxipipe.errors import ComputeError


@contextmanager
def connect(settings: Settings) -> Iterator[Any]:
    """A client on the configured scheduler, or on a LocalCluster started for the block."""
    from distributed import Client, LocalCluster

    from taxipipe import console

    address = settings.compute.dask_scheduler
    if not address:
        with LocalCluster(dashboard_address=":0", silence_logs=logging.WARNING) as cluster, \
                Client(cluster) as client:
            if not console.verbose():
                client.run(quiet_xgboost_console)
            yield client
        return
    security = tls_security(settings)
    try:
        client = Client(address, timeout="10s", security=security)
    except OSError as exc:
        if security is not None and ("TLS" in str(exc) or "SSL" in str(exc)):
            raise ComputeError(
                f"the Dask scheduler at {address} refused the TLS handshake: the certificates in "
                f"compute.dask_tls_dir ({settings.compute.dask_tls_dir}) are not its stack's; copy them "
                "again from the stack's HOME/stack/tls (or its join file)") from None
        raise unreachable(address) from None
    except TimeoutError:
        raise unreachable(address) from None
    with client:
        yield client


def unreachable(address: str) -> ComputeError:
    return ComputeError(
        f"cannot reach the Dask scheduler at {address}; start it (`dask scheduler`) or point "
        "compute.dask_scheduler (--scheduler) at a running one, or leave it empty for a local cluster")


#: What compute.dask_tls_dir holds: the stack's certificate authority, the client's certificate and key.
TLS_FILES = ("ca.pem", "client.pem", "client-key.pem")


def tls_paths(settings: Settings) -> tuple[Path, Path, Path] | None:
    """The files of compute.dask_tls_dir for a tls:// scheduler (None for another cluster); a
    tls:// address without the folder, or a folder that lacks a file, is one sentence."""
    address, folder = settings.compute.dask_scheduler, settings.compute.dask_tls_dir
    if not address.startswith("tls://"):
        return None
    if folder is None:
        raise ComputeError(
            f"the Dask scheduler {address} speaks TLS: set compute.dask_tls_dir "
            "(TAXIPIPE_COMPUTE__DASK_TLS_DIR) to a folder holding its ca.pem, client.pem and client-key.pem "
            "(a listening stack's HOME/stack/tls; `taxipipe stack env` exports it)")
    ca, cert, key = (folder / name for name in TLS_FILES)
    missing = [path.name for path in (ca, cert, key) if not path.is_file()]
    if missing:
        raise ComputeError(f"compute.dask_tls_dir ({folder}) lacks {', '.join(missing)}: copy ca.pem, "
                           "client.pem and client-key.pem from the stack's HOME/stack/tls")
    return ca, cert, key


def tls_security(settings: Settings) -> Any:
    """The mutual-TLS `Security` of a tls:// scheduler, None for a tcp:// one."""
    paths = tls_paths(settings)
    if paths is None:
        return None
    import ssl

    from distributed.security import Security

    ca, cert, key = paths
    security = Security(tls_ca_file=str(ca), tls_client_cert=str(cert), tls_client_key=str(key),
                        require_encryption=True)
    try:
        security.get_connection_args("client")
    except (ssl.SSLError, ValueError) as exc:
        raise ComputeError(f"the certificates in compute.dask_tls_dir ({ca.parent}) cannot be read ({exc}); "
                           "copy them again from the stack's HOME/stack/tls") from None
    return security


def quiet_xgboost_console() -> None:
    """On a worker of the local cluster, whose stderr is this console: drop XGBoost's greeting
    (`[12:00:00] Task [xgboost.dask-0]:tcp://... got rank 0`), pass every other line on.

    XGBoost writes it from C++ in the training thread, past Python's logging and its own log
    callback, so the worker's stderr goes through a pipe that a thread filters. `-v` keeps it.
    """
    import os
    import threading

    read, write = os.pipe()
    console = os.dup(2)
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, "rb") as lines, os.fdopen(console, "wb", buffering=0) as out:
            for line in lines:
                if b" got rank " not in line:
                    out.write(line)

    threading.Thread(target=pump, name="stderr-filter", daemon=True).start()


def train_on_cluster(settings: Settings, encoder: Any, train_path: Path, validation_path: Path) -> Trained:
    """xgboost.dask on the window, early stopping on the validation month, scored here."""
    import pyarrow.parquet as pq
    import xgboost.dask as dxgb

    from taxipipe.peak_memory import peak_rss_bytes
    from taxipipe.compute.stream import read_encoded
    from taxipipe.features import TARGET
    from taxipipe.models.base import Fit
    from taxipipe.models.xgboost import BoosterModel, booster_params, keep_best, to_dmatrix

    model, names = settings.model, encoder.feature_names
    kinds = {"feature_types": encoder.feature_types, "enable_categorical": True}
    with connect(settings) as client:
        window = send_encoded(client, train_path)
        validation = send_encoded(client, validation_path)
        dtrain = dxgb.DaskQuantileDMatrix(client, window[names], window[TARGET], **kinds)
        dvalid = dxgb.DaskDMatrix(client, validation[names], validation[TARGET], **kinds)
        output = dxgb.train(client, booster_params(model.params), dtrain, num_boost_round=model.params.n_estimators,
                            evals=[(dvalid, "validation")], early_stopping_rounds=model.early_stopping_rounds,
                            verbose_eval=False)
        workers = client.run(peak_rss_bytes)
    booster, metrics = keep_best(output["booster"])
    matrix, target = read_encoded(validation_path)
    fit = Fit(BoosterModel(booster), booster.predict(to_dmatrix(encoder, matrix)), metrics={
        **metrics, "dask_workers": len(workers),
        "dask_workers_peak_rss_mb": round(sum(workers.values()) / 2**20, 1)})
    return Trained(fit, target, pq.ParquetFile(train_path).metadata.num_rows)


def send_encoded(client: Any, path: Path) -> Any:
    """An encoded file as a dask DataFrame held by the workers, sent from here a row group at a time.

    Row groups form the partitions `dask.dataframe.read_parquet` would make of the file, so the
    booster is the one workers reading the file from a shared disk would train; partition i
    goes to the i-th worker (round robin), and its row groups are joined there.
    """
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise ComputeError(f"the Dask scheduler at {client.scheduler.address} has no workers; start "
                           "`dask worker` (or `taxipipe stack join`) on the worker hosts")
    parts = []
    sizes = [source.metadata.row_group(index).total_byte_size for index in range(source.num_row_groups)]
    for number, groups in enumerate(partition_row_groups(sizes)):
        worker = [workers[number % len(workers)]]
        pieces = [client.scatter(source.read_row_group(index).to_pandas(), workers=worker, hash=False)
                  for index in groups]
        parts.append(client.submit(join_row_groups, pieces, workers=worker))
    return dd.from_delayed(parts, meta=source.schema_arrow.empty_table().to_pandas(), verify_meta=False)


#: dask.dataframe.read_parquet's default partition size (its pyarrow engine's `blocksize`).
PARTITION_BYTES = 256 << 20


def partition_row_groups(sizes: list[int], limit: int = PARTITION_BYTES) -> list[list[int]]:
    """The row groups (by their uncompressed bytes) that make each partition, as read_parquet
    groups them: one partition while the file is at most twice `limit`; otherwise consecutive
    row groups while their sum stays within `limit`."""
    if not sizes:
        return []
    if sum(sizes) <= 2 * limit:
        return [list(range(len(sizes)))]
    partitions, current, total = [], [0], sizes[0]
    for index, size in enumerate(sizes[1:], start=1):
        if total + size <= limit:
            current.append(index)
            total += size
        else:
            partitions.append(current)
            current, total = [index], size
    partitions.append(current)
    return partitions


def join_row_groups(pieces: list[Any]) -> Any:
    """On a worker: one partition of the row groups sent to the cluster."""
    import pandas as pd

    return pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0]
