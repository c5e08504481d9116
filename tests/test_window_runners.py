"""Every runner honours the training window: the same three months, the same RMSE."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taxipipe.runners.prefect_local import local_environment
from tests.conftest import REPO, TlcServer, cli_data_flags

WINDOW = ("--train-months", "3")
#: Each runner as a user starts it; all call the same steps in one home.
RUNNERS = {
    "simple": ["-m", "taxipipe.cli", "run"],
    "make": ["-m", "taxipipe.cli", "make", "deploy"],
    "airflow": [str(REPO / "examples" / "airflow_pipeline.py")],
    "prefect": [str(REPO / "examples" / "prefect_pipeline.py")],
    "dagster": [str(REPO / "examples" / "dagster_pipeline.py")],
}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_every_runner_trains_on_the_window_with_the_same_rmse(tlc_server: TlcServer, home: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "PREFECT_", "AIRFLOW", "DAGSTER"))}
    environment.update(local_environment(home))
    flags = [*cli_data_flags(home, tlc_server, 2023, 3), *WINDOW]
    for runner, command in RUNNERS.items():
        result = subprocess.run([sys.executable, *command, *flags], capture_output=True, text=True,
                                env=environment, cwd=REPO, timeout=900)
        assert result.returncode == 0, f"{runner}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        assert "2023-01..2023-03 (validation 2023-04)" in result.stdout, runner

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    scores = {}
    for runner in RUNNERS:
        experiment = client.get_experiment_by_name(f"{runner}-taxi-duration")
        [run] = client.search_runs([experiment.experiment_id])
        assert run.data.tags["window"] == "green/2023-01..2023-03", runner
        assert run.data.params["window_first"] == "2023-01" and run.data.params["compute"] == "memory"
        scores[runner] = run.data.metrics["rmse"]
    assert max(scores.values()) - min(scores.values()) <= 1e-6, scores
    downloads = sorted(path.name for path in (home / "downloads").glob("*.parquet"))
    assert downloads == [f"green_tripdata_2023-0{month}.parquet" for month in (1, 2, 3, 4)]
