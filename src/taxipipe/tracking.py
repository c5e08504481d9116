"""MLflow: the store, experiments, runs, the pyfunc model and the registry's champion alias."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from taxipipe.config import Settings
from taxipipe.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from taxipipe.steps import StepContext

CHAMPION = "champion"
logger = logging.getLogger(__name__)
_CREATED_STORES: set[str] = set()
_REACHED_SERVERS: set[str] = set()
_warm_up: threading.Thread | None = None


def warm_up(settings: Settings, runner: str) -> None:
    """Open the store and the runner's experiment in a background thread.

    Importing MLflow and creating a new SQLite store take about two seconds of the first
    run; the data steps and training overlap with them instead of waiting. `client` waits
    for the warm-up, so the store is never created twice.
    """
    global _warm_up

    def prepare() -> None:
        try:
            experiment_id(settings, _open(settings), runner)
        except Exception:
            pass

    _warm_up = threading.Thread(target=prepare, name="mlflow-warm-up", daemon=True)
    _warm_up.start()


def client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured store (the embedded SQLite one by default).

    Served models carry explicit pip requirements, so MLflow is told not to copy the
    project's uv files into them, not to draw download progress bars, to log errors only
    (MLFLOW_LOGGING_LEVEL, or `-v` on the command line, shows more) and to send no telemetry.
    """
    if _warm_up is not None:
        _warm_up.join()
    return _open(settings)


def _open(settings: Settings) -> MlflowClient:
    for name, value in (("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"), ("MLFLOW_LOG_UV_FILES", "false"),
                        ("MLFLOW_LOGGING_LEVEL", "ERROR"), ("MLFLOW_DISABLE_TELEMETRY", "true")):
        os.environ.setdefault(name, value)
    import mlflow
    from mlflow import MlflowClient

    uri = settings.tracking_uri()
    if settings.mlflow.tracking_uri is None and uri not in _CREATED_STORES:
        _create_store(settings.home / "mlflow", uri)
    elif uri.startswith(("http://", "https://")) and uri not in _REACHED_SERVERS:
        _check_server(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def check_reachable(settings: Settings) -> None:
    """Probe the tracking server once as a run starts, so an unreachable one fails before
    the data steps rather than in `train`. The embedded store needs no probe."""
    uri = settings.tracking_uri()
    if uri.startswith(("http://", "https://")) and uri not in _REACHED_SERVERS:
        _check_server(uri)


def _check_server(uri: str) -> None:
    """Fail in seconds, with the fix, when the tracking server does not answer.

    Without this MLflow retries for minutes before it gives up with a traceback.
    """
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5)
    except requests.RequestException:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri}; start it (`taxipipe ui`) or point "
            "mlflow.tracking_uri (--tracking-uri or TAXIPIPE_MLFLOW__TRACKING_URI) elsewhere"
        ) from None
    _REACHED_SERVERS.add(uri)


def _create_store(directory: Path, uri: str) -> None:
    """Create or migrate the embedded SQLite store under a file lock.

    Processes that open a new store at once (parallel Airflow runs of a backfill) would
    otherwise race through MLflow's migrations and fail.
    """
    from filelock import FileLock
    from mlflow import MlflowClient

    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(directory / "mlflow.db.lock"):
        MlflowClient(uri).search_experiments(max_results=1)
    _CREATED_STORES.add(uri)


def experiment_id(settings: Settings, mlflow_client: MlflowClient, runner: str) -> str:
    """The runner's experiment, created on first use with artifacts in the home directory."""
    return named_experiment(settings, mlflow_client, settings.experiment_name(runner))


def named_experiment(settings: Settings, mlflow_client: MlflowClient, name: str) -> str:
    """The experiment `name`, created on first use with artifacts in the home directory."""
    from mlflow.exceptions import MlflowException

    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if settings.mlflow.tracking_uri is None:
        location = (settings.home / "mlflow" / "artifacts").as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:
        return mlflow_client.get_experiment_by_name(name).experiment_id


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, if it is one."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def log_step_seconds(mlflow_client: MlflowClient, run_id: str, timings: dict[str, float]) -> None:
    """Record how long each step took as metrics `step_seconds.<step>`."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"step_seconds.{step}", seconds, now, 0) for step, seconds in timings.items()]
    mlflow_client.log_batch(run_id, metrics=metrics)


def log_step_seconds_hook(node: str, ctx: StepContext, upstream: Mapping[str, Mapping[str, Any]],
                          record: Mapping[str, Any]) -> None:
    """After-step hook of every runner: once an MLflow run exists (train on), log step times.

    train logs the times of itself and every step before it; each later step its own.
    """
    run_id = record.get("run_id") or next(
        (previous["run_id"] for previous in upstream.values() if "run_id" in previous), None)
    if run_id is None:
        return
    step = node.split("[")[0]
    logged = dict(record["timings"]) if step == "train" else {step: record["seconds"]}
    log_step_seconds(client(ctx.settings), run_id, logged)


def champion_version(mlflow_client: MlflowClient, model_name: str) -> Any | None:
    """The registered version behind the `champion` alias, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def register(mlflow_client: MlflowClient, name: str, model_uri: str, run_id: str, model_id: str | None,
             tags: dict[str, str]) -> str:
    """A new version of registered model `name` (created on first use); its version number.

    The client's calls print nothing, unlike `mlflow.register_model`; the news is logged (-v).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        mlflow_client.create_registered_model(name)
        logger.debug(f"registered model '{name}'")
    except MlflowException as exc:
        if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise
    version = mlflow_client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id).version
    logger.debug(f"created version {version} of model '{name}'")
    return version


def pip_requirements() -> list[str]:
    """Pinned requirements of the served model: what `taxipipe.serving` imports."""
    from importlib.metadata import version

    packages = ["mlflow", "xgboost-cpu", "pandas", "numpy", "scipy", "pyarrow", "pydantic",
                "pydantic-settings"]
    return [f"{name}=={version(name)}" for name in packages]
