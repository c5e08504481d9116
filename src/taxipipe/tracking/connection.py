"""The MLflow client on the configured store: its environment, warm-up and the server probe."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from taxipipe.config import Settings
from taxipipe.errors import TrackingError
from taxipipe.tracking.runs import experiment_id
from taxipipe.tracking.store import _CREATED_STORES, prepare_store, sqlite_file

if TYPE_CHECKING:
    from mlflow import MlflowClient

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
    (MLFLOW_LOGGING_LEVEL, or `-v` on the command line, shows more), to send no telemetry and
    not to print a run's links when it ends against a tracking server (the run's lines name it).
    A tracking server's errors are retried 4 times within about 15 s (MLflow's own default is
    7 times within about 4 minutes); the runners that retry steps retry on top of that, and
    MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR in the environment win. Database errors it re-raises are not also logged with their traceback: the step
    reports them in one sentence.
    """
    finish_warm_up()
    return _open(settings)


def finish_warm_up() -> None:
    """Wait for the warm-up: a run that fails must not leave while it writes a new store.

    An interrupted run leaves without waiting: the signal may have left Python's import lock
    held, and the warm-up would wait for it forever. A store cut short that way is built under
    a temporary name, as after a kill, so nothing half-made is left in place (`prepare_store`).
    """
    if _warm_up is not None:
        _warm_up.join()


def _open(settings: Settings) -> MlflowClient:
    for name, value in (("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"), ("MLFLOW_LOG_UV_FILES", "false"),
                        ("MLFLOW_LOGGING_LEVEL", "ERROR"), ("MLFLOW_DISABLE_TELEMETRY", "true"),
                        ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"),
                        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")):
        os.environ.setdefault(name, value)
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    uri = settings.tracking_uri()
    if sqlite_file(uri) is not None and uri not in _CREATED_STORES:
        prepare_store(uri)
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

