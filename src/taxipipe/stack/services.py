"""The stack's server processes: what every service is, MLflow's, and what an engine declares.

Each service is a command, its environment and a health check: an API call that reads the
service's store in PostgreSQL, so a server whose database went away is not healthy. Database
URLs and keys go through environment variables, never the command line, so `ps` shows no password.
Every process listens on 127.0.0.1 only, unless `stack.listen` names an address: then the servers
a worker host reaches (MLflow, Airflow's API server, Prefect's server, the Dask scheduler) listen
there instead, each demanding credentials, and the rest stays on 127.0.0.1. Each engine's
services are defined in its folder (`runners/NAME/services.py`) as an `Engine`;
`runners/engines.py` lists the engines the stack runs.
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
from taxipipe.safety.atomic import write_private
from taxipipe.stack.join_file import JoinFile
from taxipipe.stack.state import MLFLOW_DATABASE, StackPaths, load_secrets, token
from taxipipe.stack.workers import JoinedWorker, Probe, Worker, WorkerHost
from taxipipe.tracking.server import server_command, server_env


LOOPBACK = "127.0.0.1"

#: The MLflow basic-auth app's administrator, the login every client of a listening stack uses.
MLFLOW_ADMIN = "admin"


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
    #: the address its port is on
    host: str = LOOPBACK


def _none(stack: Stack) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class WorkerKind:
    """An engine's worker on the hosts that join a listening stack (`taxipipe stack join`)."""

    #: an authenticated call to the engine's server with the join file's credentials
    probe: Callable[[JoinFile], Probe]
    #: the worker process of a joining host
    worker: Callable[[WorkerHost], Worker]
    #: the workers the server knows, for `taxipipe stack status` on the server host
    joined: Callable[[Stack], list[JoinedWorker]]


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
    #: of its secrets, those `stack up --new-credentials` makes anew (its databases' passwords stay)
    credentials: tuple[str, ...] = ()
    #: what `taxipipe stack env` exports for it, credentials included
    shell_env: Callable[[Stack], dict[str, str]] = _none
    #: its fields of the join file a listening stack writes (see `stack/join_file.py`)
    join: Callable[[Stack], dict[str, str]] = _none
    #: variables another stack's shell may have set, which its processes must not inherit
    stale: tuple[str, ...] = ()
    #: a clause added to the line `up` ends with, e.g. where a login's password is
    ready_note: Callable[[Stack], str] | None = None
    #: its worker on other hosts, if it has one
    worker: WorkerKind | None = None
    #: of its services, those that run tasks on this host, which a listening stack does not start
    #: (the workers of the hosts that join it run them)
    local_only: tuple[str, ...] = ()


def project_dir(settings: Settings) -> Path:
    """The directory holding dags/ and prefect.yaml: stack.project_dir, or the package's checkout."""
    candidate = settings.stack.project_dir or Path(__file__).resolve().parents[3]
    candidate = candidate.expanduser().resolve()
    if not (candidate / "dags").is_dir() or not (candidate / "prefect.yaml").is_file():
        raise StackError(f"{candidate} holds no dags/ folder and prefect.yaml: set stack.project_dir "
                         "(TAXIPIPE_STACK__PROJECT_DIR) to a checkout of taxipipe")
    return candidate


def get_json(url: str, auth: tuple[str, str] | None = None) -> Any | None:
    """The JSON answer of a GET (with basic `auth`), or None when the server does not answer 200."""
    import httpx

    try:
        response = httpx.get(url, auth=auth, timeout=10)
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
        return load_secrets(self.paths, self.databases, self._generated_secrets)

    def _generated_secrets(self) -> dict[str, str]:
        """The stack's id, MLflow's login and key, and what each engine needs."""
        return {"stack_id": token(12), **mlflow_secrets(),
                **{key: value for engine in self.engines for key, value in engine.secrets().items()}}

    @property
    def credentials(self) -> tuple[str, ...]:
        """The secrets `up --new-credentials` makes anew: every login and signing key, not the
        databases' passwords (PostgreSQL stays on 127.0.0.1) nor the stack's id."""
        return (*MLFLOW_CREDENTIALS, *(name for engine in self.engines for name in engine.credentials))

    @property
    def databases(self) -> tuple[str, ...]:
        """MLflow's database and the engines'."""
        return (MLFLOW_DATABASE, *(name for engine in self.engines for name in engine.databases))

    def home(self, engine: str) -> Path:
        """Where `engine` keeps its files."""
        return self.paths.engine_home(engine)

    # --- addresses -------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """Whether the servers workers reach listen on `stack.listen`, with credentials."""
        return bool(self.settings.stack.listen)

    @property
    def host(self) -> str:
        """Where the servers workers reach listen: `stack.listen`, or 127.0.0.1."""
        return self.settings.stack.listen or LOOPBACK

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.ports.mlflow_port}"

    @property
    def mlflow_auth(self) -> tuple[str, str] | None:
        """The login MLflow's basic-auth app demands of a listening stack's clients."""
        return (MLFLOW_ADMIN, self.secrets["mlflow_admin"]) if self.listening else None

    @property
    def mlflow_client_env(self) -> dict[str, str]:
        """What points an MLflow client at the stack's server, with its login when it demands one."""
        login = ({"MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN, "MLFLOW_TRACKING_PASSWORD": self.secrets["mlflow_admin"]}
                 if self.listening else {})
        return {"TAXIPIPE_MLFLOW__TRACKING_URI": self.mlflow_url, "MLFLOW_TRACKING_URI": self.mlflow_url, **login}

    def database_url(self, name: str, driver: str) -> str:
        return postgres.url(name, self.secrets[f"db_{name}"], self.ports.postgres_port, driver)

    # --- environments ----------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        """This process's environment, without stale settings of another stack or of this command."""
        stale = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_LOGGING_LEVEL", *(name for engine in self.engines for name in engine.stale))
        return {key: value for key, value in os.environ.items() if key not in stale}

    def user_env(self) -> dict[str, str]:
        """What points a shell and every runner at the stack (`taxipipe stack env`), with the
        credentials of a listening stack's servers."""
        return {
            "TAXIPIPE_HOME": str(self.settings.home),
            **self.mlflow_client_env,
            **{key: value for engine in self.engines for key, value in engine.shell_env(self).items()},
        }

    def runner_environment(self) -> dict[str, str]:
        """The environment of processes that run the pipeline: the stack's home and MLflow server."""
        return {**self.base_env(), **self.runner_env, "TAXIPIPE_HOME": str(self.settings.home),
                **self.mlflow_client_env,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def mlflow_env(self) -> dict[str, str]:
        env = {**self.base_env(), **server_env(self.database_url("mlflow", "psycopg2"))}
        if self.listening:
            env.update({"MLFLOW_AUTH_CONFIG_PATH": str(auth_config(self)),
                        "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets["mlflow_flask_secret"]})
        return env

    # --- the services ----------------------------------------------------------------------

    def python(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def mlflow(self) -> Service:
        port = self.ports.mlflow_port
        command = server_command(port, str(self.paths.artifacts), host=self.host,
                                 allowed_hosts=f"{self.host}:{port},{self.host}" if self.listening else None,
                                 app_name="basic-auth" if self.listening else None)
        return Service("mlflow", command, self.mlflow_env,
                       lambda: get_json(f"{self.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1",
                                        self.mlflow_auth) is not None,
                       port, self.mlflow_url, "mlflow_port", host=self.host)


#: MLflow's secrets under --listen, all of them credentials.
MLFLOW_CREDENTIALS = ("mlflow_admin", "mlflow_flask_secret")


def mlflow_secrets() -> dict[str, str]:
    return {"mlflow_admin": token(), "mlflow_flask_secret": token(32)}


def auth_config(stack: Stack) -> Path:
    """The basic-auth app's config (0600): its own user store, a SQLite file beside it, whose
    administrator MLflow creates on its first start with the stack's password.

    Every other user gets no permission by default: only the administrator's login works.
    A verified login is remembered for a minute: checking its salted hash costs about a third
    of a second of CPU, on every request otherwise (the server has one worker, so no other
    worker could keep a changed password alive).
    """
    path = stack.paths.mlflow / "basic_auth.ini"
    write_private(path, "[mlflow]\n"
                        "default_permission = NO_PERMISSIONS\n"
                        f"database_uri = sqlite:///{auth_database(stack.paths)}\n"
                        f"admin_username = {MLFLOW_ADMIN}\n"
                        f"admin_password = {stack.secrets['mlflow_admin']}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                        "auth_cache_ttl_seconds = 60\n")
    return path


def auth_database(paths: StackPaths) -> Path:
    """The basic-auth app's users; `up --new-credentials` removes it, with its administrator."""
    return paths.mlflow / "basic_auth.db"
