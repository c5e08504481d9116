"""The seed's entry points: thin scripts over the same steps."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import forked
from tests.helpers import REPO, TlcServer, cli_data_flags, store_uri


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return forked.run_script(REPO / "examples" / name, list(args), dict(os.environ), cwd)


@pytest.mark.slow
def test_simple_pipeline_example(home: Path, tlc_server: TlcServer, tmp_path: Path) -> None:
    result = run_example("simple_pipeline.py", *cli_data_flags(home, tlc_server), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "🎉 Pipeline completed successfully!" in result.stdout
    assert "📊 Final model RMSE: 6.0507" in result.stdout


@pytest.mark.slow
def test_original_script_writes_the_run_id(home: Path, tlc_server: TlcServer, tmp_path: Path) -> None:
    result = run_example("duration-prediction.py", *cli_data_flags(home, tlc_server), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_id = (tmp_path / "run_id.txt").read_text()
    assert len(run_id) == 32 and f"MLflow run_id: {run_id}" in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == "🚀 Starting ML Pipeline (script runner)" and "🚀 Running task: deploy" in lines
    assert "🎉 Pipeline completed successfully!" in lines and f"🆔 Model run ID: {run_id}" in lines

    from mlflow import MlflowClient

    client = MlflowClient(store_uri(home))
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "script-taxi-duration"
    assert run.data.metrics["rmse"] < 6.2


def test_examples_fail_cleanly(home: Path, tlc_server: TlcServer, tmp_path: Path) -> None:
    flags = cli_data_flags(home, tlc_server, year=2030)
    for script in ("simple_pipeline.py", "duration-prediction.py"):
        result = run_example(script, *flags, cwd=tmp_path)
        assert result.returncode == 1
        assert "HTTP 404" in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "run_id.txt").exists()
