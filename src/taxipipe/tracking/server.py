"""The one way taxipipe starts `mlflow server`: `taxipipe ui` on the embedded store, and the stack's
MLflow service on PostgreSQL."""

from __future__ import annotations

import sys

#: Where MLflow 3's UI opens on its model-training view (its sidebar switch otherwise starts on GenAI).
UI_START_PAGE = "/#/experiments?workflowType=machine_learning"


def server_command(port: int, artifacts_destination: str, *, default_artifact_root: str | None = None,
                   host: str = "127.0.0.1", allowed_hosts: str | None = None, app_name: str | None = None,
                   quiet: bool = False) -> list[str]:
    """`mlflow server` on `host`:`port` with one worker, proxying artifacts to `artifacts_destination`.

    Clients on other hosts upload and download files through the server (`--serve-artifacts`);
    they land under `artifacts_destination`, never in the server's working directory (MLflow's
    default). Experiments the server creates keep artifacts at `default_artifact_root` (by
    default the proxy, `mlflow-artifacts:/`). `allowed_hosts` (`host:port,…`) are the Host headers
    it answers (MLflow's default otherwise). `app_name` is a server app such as `basic-auth`
(its configuration in the environment). `quiet` drops the line per request. The store is
    named in the environment (`server_env`), not here, where a password would show in `ps`.
    """
    command = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts",
               "--artifacts-destination", artifacts_destination, "--host", host, "--port", str(port),
               "--workers", "1"]
    if default_artifact_root is not None:
        command += ["--default-artifact-root", default_artifact_root]
    if allowed_hosts is not None:
        command += ["--allowed-hosts", allowed_hosts]
    if app_name is not None:
        command += ["--app-name", app_name]
    if quiet:
        command += ["--uvicorn-opts", "--no-access-log --log-level warning"]
    return command


def server_env(store_uri: str, quiet: bool = False) -> dict[str, str]:
    """What `server_command` needs in its environment: the store of runs and registry alike, and
    no job runners (on two cores they cost seconds of start-up); `quiet` silences library warnings."""
    return {"MLFLOW_BACKEND_STORE_URI": store_uri, "MLFLOW_REGISTRY_STORE_URI": store_uri,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **({"PYTHONWARNINGS": "ignore"} if quiet else {})}
