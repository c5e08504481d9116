"""What a host that joins a stack runs (`taxipipe stack join`), as each engine declares it.

A worker host is a home of its own (a cache it may lose) plus the join file: the servers'
addresses and credentials. Each engine says how to ask its server whether the credentials are
accepted (a `Probe`), what its worker process is (a `Worker`), and, on the server host, which
workers have joined (`JoinedWorker`, for `taxipipe stack status`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from taxipipe.stack.join_file import JoinFile

#: The variables of a shell pointed at some stack that a worker must not pass on to its tasks.
STALE = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "TAXIPIPE_MLFLOW__TRACKING_URI",
         "PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "AIRFLOW_HOME", "AIRFLOW__CORE__EXECUTOR",
         "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD", "AIRFLOW__EDGE__API_URL", "AIRFLOW__API_AUTH__JWT_SECRET")


@dataclass(frozen=True)
class WorkerHost:
    """This host as a member of the stack its join file names."""

    join: JoinFile
    hostname: str
    #: the taxipipe home of this host, where the steps it runs keep their files
    home: Path
    #: the checkout holding dags/ and prefect.yaml, at the same place as on the server host
    project: Path
    #: task slots of each worker (`stack.worker_concurrency`)
    concurrency: int

    @property
    def root(self) -> Path:
        """HOME/join: the workers' own homes, their logs and TLS files."""
        return self.home / "join"

    def engine_home(self, engine: str) -> Path:
        return self.root / engine

    def log(self, engine: str) -> Path:
        return self.root / "logs" / f"{engine}-worker.log"

    def create(self, engines: list[str]) -> None:
        """The directories, private to this user."""
        for directory in (self.root, self.root / "logs", *map(self.engine_home, engines)):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def task_env(self) -> dict[str, str]:
        """The environment of the steps a worker runs: this host's home, the stack's MLflow server
        with its login, and the settings the stack's runs get."""
        join = self.join
        return {**{key: value for key, value in os.environ.items() if key not in STALE},
                **join.runner_env,
                "TAXIPIPE_HOME": str(self.home),
                "TAXIPIPE_MLFLOW__TRACKING_URI": join.mlflow_url, "MLFLOW_TRACKING_URI": join.mlflow_url,
                "MLFLOW_TRACKING_USERNAME": join.mlflow_username, "MLFLOW_TRACKING_PASSWORD": join.mlflow_password,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@dataclass(frozen=True)
class Worker:
    """One engine's worker process on a worker host."""

    engine: str
    command: list[str]
    env: dict[str, str]
    cwd: Path | None = None


@dataclass(frozen=True)
class Probe:
    """One authenticated call to a server: `call` answers its HTTP status, or None when nothing
    answers (no connection, a time-out, or a server error)."""

    #: the server as a sentence names it, e.g. "MLflow"
    server: str
    url: str
    call: Callable[[], int | None]


@dataclass(frozen=True, order=True)
class JoinedWorker:
    """A worker of a joined host as its server knows it (a line of `stack status`)."""

    host: str
    engine: str
    alive: bool


def http_status(method: str, url: str, **request: object) -> int | None:
    """The HTTP status of one request, or None when nothing answers or the server fails (5xx)."""
    import httpx

    try:
        response = httpx.request(method, url, timeout=10, **request)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None
    return None if response.status_code >= 500 else response.status_code
