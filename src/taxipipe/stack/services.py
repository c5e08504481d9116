"""The stack's server processes: what every service is, MLflow's, and what an engine declares.

Each service is a command, its environment and a health check: an API call that reads the
service's store in PostgreSQL, so a server whose database went away is not healthy. Database
URLs and keys go through environment variables, never the command line, so `ps` shows no password. Every
process listens on 127.0.0.1 only. Each engine's services are defined in its folder
(`runners/NAME/services.py`) as an `Engine`; `runners/engines.py` lists the engines the stack runs.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from taxipipe.config import Settings
from taxipipe.errors import StackError
from taxipipe.stack import postgres
from taxipipe.stack.state import MLFLOW_DATABASE, StackPaths, load_secrets
from taxipipe.tracking.server import server_command, server_env


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack."""

    name: str
    command: list[str]
    env: Callable[[], dict[str, str]]
    health: Callable[[], bool]
    port: int | None = None
    url: str | None = None
    setting: str | None = None
    cwd: Path | None = None


def _none(stack: Stack) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Engine:
    """One engine's part of the stack, declared in its folder (`runners/NAME/services.py`).

    `start(stack, services, missing, databases)` prepares what its services need (files, a
    database migration, a deployment), then starts those of its services named in `missing`
    (with `control.start_together`/`start_missing`); `databases` maps each database to its oid.
    """

    name: str
    #: its services' names, in start order (`down` and `status` know them without building any)
    service_names: tuple[str, ...]
    services: Callable[[Stack], list[Service]]
    start: Callable[[Stack, Mapping[str, Service], set[str], Mapping[str, int]], None]
    #: its PostgreSQL databases (each with a role of the same name and a password `db_NAME`)
    databases: tuple[str, ...] = ()
    #: the passwords and keys it needs beside its databases', made anew (kept ones win)
    secrets: Callable[[], dict[str, str]] = dict
    #: what `taxipipe stack env` exports for it (no secrets)
    shell_env: Callable[[Stack], dict[str, str]] = _none
    #: variables another stack's shell may have set, which its processes must not inherit
    stale: tuple[str, ...] = ()
    #: a clause added to the line `up` ends with, e.g. where a login's password is
    ready_note: Callable[[Stack], str] | None = None


def project_dir(settings: Settings) -> Path:
    """The directory holding dags/ and prefect.yaml: stack.project_dir, or the package's checkout."""
    candidate = settings.stack.project_dir or Path(__file__).resolve().parents[3]
    candidate = candidate.expanduser().resolve()
    if not (candidate / "dags").is_dir() or not (candidate / "prefect.yaml").is_file():
        raise StackError(f"{candidate} holds no dags/ folder and prefect.yaml: set stack.project_dir "
                         "(TAXIPIPE_STACK__PROJECT_DIR) to a checkout of taxipipe")
    return candidate


def get_json(url: str) -> Any | None:
    """The JSON answer of a GET, or None when the server does not answer 200."""
    import httpx

    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


@dataclass
class Stack:
    """Every service of one stack with the settings it was built from."""

    settings: Settings
    engines: Sequence[Engine] = ()
    runner_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.paths = StackPaths.of(self.settings.home)
        self.ports = self.settings.stack
        self.project = project_dir(self.settings)

    @cached_property
    def secrets(self) -> dict[str, str]:
        """Generated on the first `up` (after `paths.create()`), read afterwards."""
        return load_secrets(self.paths, self.databases, self._engine_secrets)

    def _engine_secrets(self) -> dict[str, str]:
        return {key: value for engine in self.engines for key, value in engine.secrets().items()}

    @property
    def databases(self) -> tuple[str, ...]:
        """MLflow's database and the engines'."""
        return (MLFLOW_DATABASE, *(name for engine in self.engines for name in engine.databases))

    def home(self, engine: str) -> Path:
        """Where `engine` keeps its files."""
        return self.paths.engine_home(engine)

    # --- addresses -------------------------------------------------------------------------

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow_port}"

    def database_url(self, name: str, driver: str) -> str:
        return postgres.url(name, self.secrets[f"db_{name}"], self.ports.postgres_port, driver)

    # --- environments ----------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        """This process's environment, without stale settings of another stack or of this command."""
        stale = ("MLFLOW_TRACKING_URI", "MLFLOW_LOGGING_LEVEL", *(name for engine in self.engines
                                                                   for name in engine.stale))
        return {key: value for key, value in os.environ.items() if key not in stale}

    def user_env(self) -> dict[str, str]:
        """What points a shell and every runner at the stack (`taxipipe stack env`); no secrets."""
        return {
            "TAXIPIPE_HOME": str(self.settings.home),
            "TAXIPIPE_MLFLOW__TRACKING_URI": self.mlflow_url,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            **{key: value for engine in self.engines for key, value in engine.shell_env(self).items()},
        }

    def runner_environment(self) -> dict[str, str]:
        """The environment of processes that run the pipeline: the stack's home and MLflow server."""
        return {**self.base_env(), **self.runner_env, "TAXIPIPE_HOME": str(self.settings.home),
                "TAXIPIPE_MLFLOW__TRACKING_URI": self.mlflow_url, "MLFLOW_TRACKING_URI": self.mlflow_url,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def mlflow_env(self) -> dict[str, str]:
        return {**self.base_env(), **server_env(self.database_url("mlflow", "psycopg2"))}

    # --- the services ----------------------------------------------------------------------

    def python(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def mlflow(self) -> Service:
        command = server_command(self.ports.mlflow_port, str(self.paths.artifacts))
        return Service("mlflow", command, self.mlflow_env,
                       lambda: get_json(f"{self.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1")
                       is not None, self.ports.mlflow_port, self.mlflow_url, "mlflow_port")
