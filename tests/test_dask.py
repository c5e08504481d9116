"""Training through a real Dask cluster: `dask scheduler` and two `dask worker` processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from taxipipe import tracking
from taxipipe.compute.dask import connect
from taxipipe.config import load_settings
from taxipipe.errors import ComputeError
from taxipipe.runners.simple import SimplePipeline
from tests.helpers import cli_data_flags, free_port, run_cli, stop_processes

WINDOW_2023 = {"year": 2023, "month": 3, "train_months": 3}
#: xgboost.dask sketches quantiles per worker and sums histograms across workers, so cut
#: points and float sums differ slightly from one process's: close, not identical.
DASK_AGREEMENT = 0.05


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-threaded workers on 127.0.0.1, stopped afterwards."""
    from distributed import Client

    work = tmp_path_factory.mktemp("dask")
    dask = str(Path(sys.executable).parent / "dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    log = open(work / "cluster.log", "w")
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                   "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT, cwd=work)]
    for index in range(2):
        processes.append(subprocess.Popen(
            [dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
             "--name", f"worker-{index}", "--local-directory", str(work / f"worker-{index}")],
            stdout=log, stderr=subprocess.STDOUT, cwd=work))
    try:
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        stop_processes(processes)
        log.close()


@pytest.mark.slow
def test_a_window_trains_through_a_dask_cluster_close_to_local(
        make_settings, home: Path, tlc_server, dask_scheduler: str) -> None:
    local = SimplePipeline(make_settings(data=WINDOW_2023)).run()["train"]

    result = run_cli("run", *cli_data_flags(home, tlc_server, 2023, 3), "--train-months", "3",
                     "--engine", "dask", "--scheduler", dask_scheduler)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "📅 Data: green 2023-01..2023-03 (validation 2023-04)" in result.stdout
    run_id = next(line for line in result.stdout.splitlines() if line.startswith("🆔")).split()[-1]
    run = tracking.client(make_settings()).get_run(run_id)
    assert run.data.params["compute"] == "dask" and run.data.metrics["dask_workers"] == 2
    assert run.data.metrics["dask_workers_peak_rss_mb"] > 0
    assert abs(run.data.metrics["rmse"] - local["rmse"]) <= DASK_AGREEMENT
    assert "📈 Peak memory:" in result.stdout


@pytest.mark.slow
def test_a_local_cluster_run_prints_only_the_runs_lines(home: Path, tlc_server) -> None:
    """The local cluster's workers write to this console: XGBoost's `got rank 0` stays off it."""
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--engine", "dask")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "🎉 Pipeline completed successfully!" in result.stdout
    assert "got rank" not in result.stdout + result.stderr, result.stderr


def test_an_unreachable_scheduler_is_one_sentence() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    settings = load_settings(overrides={"compute": {"engine": "dask", "dask_scheduler": address}})
    with pytest.raises(ComputeError, match=f"cannot reach the Dask scheduler at {address}"):
        with connect(settings):
            pass


def test_row_groups_form_the_partitions_read_parquet_would_make(tmp_path: Path) -> None:
    """The client sends the window in the partitions workers reading the file would have made,
    so the booster (and the RMSE) stays the one a shared disk gave."""
    import dask.dataframe as dd
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from taxipipe.compute.dask import partition_row_groups

    path = tmp_path / "encoded.parquet"
    rows = np.arange(200_000, dtype=np.float32)
    pq.write_table(pa.table({"trip_distance": rows, "duration": rows.astype(np.float64)}), path, row_group_size=15_000)
    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(index).total_byte_size for index in range(metadata.num_row_groups)]
    for limit in (sizes[0] // 2, 2 * sizes[0], 3 * sizes[0] + 1, sum(sizes) // 2):
        groups = partition_row_groups(sizes, limit)
        expected = [len(part) for part in dd.read_parquet(str(path), blocksize=limit).partitions]
        assert [sum(metadata.row_group(index).num_rows for index in part) for part in groups] == expected
        assert [index for part in groups for index in part] == list(range(len(sizes)))
    assert len(partition_row_groups(sizes)) == 1 and partition_row_groups([]) == []


def test_a_scheduler_without_workers_is_one_sentence(tmp_path: Path) -> None:
    import logging

    import pyarrow as pa
    import pyarrow.parquet as pq
    from distributed import Client, LocalCluster

    from taxipipe.compute.dask import send_encoded

    path = tmp_path / "encoded.parquet"
    pq.write_table(pa.table({"trip_distance": [1.0], "duration": [5.0]}), path)
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0", silence_logs=logging.WARNING) as cluster, \
            Client(cluster) as client, pytest.raises(ComputeError, match="has no workers; start `dask worker`"):
        send_encoded(client, path)
