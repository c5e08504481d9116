"""A real MLflow tracking server: `taxipipe ui` serves the store, the pipeline logs through HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import TlcServer, cli_data_flags, final_run_id, run_cli


@pytest.mark.slow
def test_pipeline_through_a_tracking_server(ui_server, home: Path, tlc_server: TlcServer) -> None:
    url, server_home, _ = ui_server
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--tracking-uri", url)
    assert result.returncode == 0, result.stderr
    run_id = final_run_id(result.stdout)
    assert "View run" not in result.stdout and "View experiment" not in result.stdout, result.stdout

    from mlflow import MlflowClient

    client = MlflowClient(url, registry_uri=url)
    run = client.get_run(run_id)
    assert run.data.metrics["rmse"] < 6.2
    assert sorted(item.dataset.name for item in run.inputs.dataset_inputs) == ["green 2021-01", "green 2021-02"]
    champion = client.get_model_version_by_alias("nyc-taxi-duration", "champion")
    assert champion.run_id == run_id
    assert client.get_registered_model("nyc-taxi-duration").description.startswith("NYC taxi trip duration")
    assert (server_home / "mlflow" / "mlflow.db").exists()
    assert not (home / "mlflow").exists()
    # the steps handed each other files through the artifact proxy, and cleanup removed them
    shared = server_home / "mlflow" / "artifacts" / "intermediates"
    assert shared.is_dir() and not [path for path in shared.rglob("*") if path.is_file()]

    # a file sent through the server's artifact proxy, as a worker on another host sends it,
    # lands beside the server's store, not in the server's working directory
    import httpx

    answer = httpx.put(f"{url}/api/2.0/mlflow-artifacts/artifacts/probe/hello.txt", content=b"hello", timeout=60)
    assert answer.status_code == 200, answer.text
    assert (server_home / "mlflow" / "artifacts" / "probe" / "hello.txt").read_bytes() == b"hello"


def test_the_server_command_keeps_the_store_password_off_the_command_line() -> None:
    from taxipipe import tracking

    url = "postgresql+psycopg2://mlflow:s3cret@127.0.0.1:5432/mlflow"
    command, env = tracking.server_command(5001, "/srv/artifacts"), tracking.server_env(url)
    assert "s3cret" not in " ".join(command)
    assert env["MLFLOW_BACKEND_STORE_URI"] == env["MLFLOW_REGISTRY_STORE_URI"] == url
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--workers") + 1] == "1"
    assert command[command.index("--artifacts-destination") + 1] == "/srv/artifacts"
