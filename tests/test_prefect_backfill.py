"""Backfilling months at once: a Prefect flow on prefect-dask's DaskTaskRunner, real workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taxipipe.runners.prefect_local import local_environment
from tests.conftest import REPO, TlcServer

EXAMPLE = REPO / "examples" / "prefect_backfill.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_months_train_at_once_on_a_two_worker_cluster(tlc_server: TlcServer, home: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "PREFECT_"))}
    environment.update(local_environment(home))
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "2023-02", "2023-03", "--workers", "2", "--home", str(home),
         "--url-template", tlc_server.url_template],
        capture_output=True, text=True, env=environment, timeout=800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "DaskTaskRunner" in result.stderr or "dask" in result.stderr.lower()
    lines = [line for line in result.stdout.splitlines() if line.startswith("📊 ")]
    assert [line.split(":")[0] for line in lines] == ["📊 green/2023-02", "📊 green/2023-03"]
    assert "Error logging to API" not in result.stdout + result.stderr

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("prefect-taxi-duration")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.tags["partition"] for run in runs) == ["green/2023-02", "green/2023-03"]
    assert {run.data.tags["prefect_task_runner"] for run in runs} == {"dask"}
    assert all(3 < run.data.metrics["rmse"] < 8 for run in runs)
