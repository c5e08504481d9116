"""The Dagster runner: the job built from the graph, its partitions and retries, and a real
in-process run on real months served over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from taxipipe.partition import Partition, scheduled_training_month
from taxipipe.pipeline import edges, month_node
from taxipipe.steps import StepContext
from tests.conftest import REPO, TlcServer, cli_data_flags


def test_the_job_is_the_graph() -> None:
    from taxipipe.runners.dagster import taxi_duration_pipeline

    upstream: dict[str, set[str]] = {}
    for node, inputs in taxi_duration_pipeline.graph.dependencies.items():
        upstream[node.name] = {dependency.node for definition in inputs.values()
                               for dependency in definition.get_node_dependencies()}
    # extract is mapped over the dynamic output of `months` (the months a run reads)
    assert upstream.pop("months") == set() and upstream["extract"] == {"months"}
    upstream["extract"].remove("months")
    assert upstream == edges(), "the job's ops and dependencies must be the graph's"


def test_partitions_are_training_months_the_newest_surely_published() -> None:
    from taxipipe.runners.dagster import PARTITIONS
    from taxipipe.runners.dagster_definitions import defs, monthly

    newest = scheduled_training_month("green", datetime.now(timezone.utc))
    assert PARTITIONS.get_last_partition_key() == f"{newest.label}-01"
    assert monthly.cron_schedule == "0 6 15 * *"
    assert defs.get_job_def("taxi_duration_pipeline").partitions_def == PARTITIONS


def test_a_missing_month_fails_the_op_without_retries(make_settings, tlc_server: TlcServer) -> None:
    from dagster import Failure

    from taxipipe.runners.dagster import DOWNLOAD_RETRY, RETRY, _run

    assert RETRY.backoff is not None and DOWNLOAD_RETRY.max_retries > RETRY.max_retries
    settings = make_settings(data={"year": 2019, "month": 1, "download_retries": 0})
    asked_before = tlc_server.hits("green_tripdata_2019-01.parquet")
    with pytest.raises(Failure) as failed:
        _run(month_node("extract", Partition("green", 2019, 1)), StepContext(settings), {})
    assert failed.value.allow_retries is False
    assert "HTTP 404" in failed.value.description
    assert tlc_server.hits("green_tripdata_2019-01.parquet") == asked_before + 1


@pytest.mark.slow
def test_the_example_gives_the_simple_runners_rmse(make_settings, tlc_server: TlcServer, tmp_path: Path) -> None:
    from taxipipe.runners.simple import SimplePipeline

    simple_rmse = SimplePipeline(make_settings()).run()["train"]["rmse"]
    home, user_home = tmp_path / "dagster-home", tmp_path / "user"
    user_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "DAGSTER"))}
    env["HOME"] = str(user_home)
    result = subprocess.run([sys.executable, str(REPO / "examples" / "dagster_pipeline.py"),
                             *cli_data_flags(home, tlc_server)], capture_output=True, text=True, env=env,
                            timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "🎉 Pipeline completed successfully!" in result.stdout
    assert "✅ Task 'extract[2021-02]' completed" in result.stdout
    assert f"📊 Final model RMSE: {simple_rmse:.4f}" in result.stdout

    [run] = mlflow_runs(home)
    assert run.data.metrics["rmse"] == pytest.approx(simple_rmse, abs=1e-6)
    assert run.data.tags["runner"] == "dagster" and run.data.tags["partition"] == "green/2021-01"
    assert len(run.data.tags["dagster.run_id"]) == 36
    assert {f"step_seconds.{name}" for name in ("extract", "train", "deploy")} <= set(run.data.metrics)
    assert (home / "dagster" / "dagster.yaml").is_file() and (home / "dagster" / "history").is_dir()
    assert not (user_home / ".dagster").exists() and not list(tmp_path.glob("tmp*"))


def mlflow_runs(home: Path) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dagster-taxi-duration")
    return client.search_runs([experiment.experiment_id])
