"""The stack's server processes: MLflow, Airflow (LocalExecutor) and Prefect, on PostgreSQL.

Each service is a command, its environment and a health check: an API call that reads the
service's store in PostgreSQL, so a server whose database went away is not healthy. Database
URLs and keys go through environment variables, never the command line, so `ps` shows no password. Every
process listens on 127.0.0.1 only: Airflow's scheduler runs without its log server (which
would bind every interface); the API server reads task logs from the shared log folder.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

from taxipipe.config import Settings
from taxipipe.engine_env import airflow_environment, prefect_environment
from taxipipe.errors import StackError
from taxipipe.stack import postgres
from taxipipe.stack.state import StackPaths, load_secrets
from taxipipe.tracking.server import server_command, server_env

AIRFLOW_ADMIN = "admin"
DAG_ID = "taxi_duration_pipeline"
PREFECT_WORKER_NAME = "taxipipe-stack"


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


def project_dir(settings: Settings) -> Path:
    """The directory holding dags/ and prefect.yaml: stack.project_dir, or the package's checkout."""
    candidate = settings.stack.project_dir or Path(__file__).resolve().parents[3]
    candidate = candidate.expanduser().resolve()
    if not (candidate / "dags").is_dir() or not (candidate / "prefect.yaml").is_file():
        raise StackError(f"{candidate} holds no dags/ folder and prefect.yaml: set stack.project_dir "
                         "(TAXIPIPE_STACK__PROJECT_DIR) to a checkout of taxipipe")
    return candidate


def _get_json(url: str) -> Any | None:
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


def prefect_pool(project: Path) -> str:
    """The work pool prefect.yaml deploys to."""
    import yaml

    declared = yaml.safe_load((project / "prefect.yaml").read_text())
    return declared["deployments"][0]["work_pool"]["name"]


@dataclass
class Stack:
    """Every service of one stack with the settings it was built from."""

    settings: Settings
    runner_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.paths = StackPaths.of(self.settings.home)
        self.ports = self.settings.stack
        self.project = project_dir(self.settings)

    @cached_property
    def secrets(self) -> dict[str, str]:
        """Generated on the first `up` (after `paths.create()`), read afterwards."""
        return load_secrets(self.paths)

    # --- addresses -------------------------------------------------------------------------

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.mlflow_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.airflow_port}"

    @property
    def dagster_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.dagster_port}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.ports.prefect_port}/api"

    def database_url(self, name: str, driver: str) -> str:
        return postgres.url(name, self.secrets[f"db_{name}"], self.ports.postgres_port, driver)

    # --- environments ----------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        """This process's environment, without stale settings of another stack or of this command."""
        stale = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD", "PREFECT_API_URL", "MLFLOW_TRACKING_URI",
                 "MLFLOW_LOGGING_LEVEL")
        return {key: value for key, value in os.environ.items() if key not in stale}

    def user_env(self) -> dict[str, str]:
        """What points a shell and every runner at the stack (`taxipipe stack env`); no secrets."""
        return {
            "TAXIPIPE_HOME": str(self.settings.home),
            "TAXIPIPE_MLFLOW__TRACKING_URI": self.mlflow_url,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "PREFECT_API_URL": self.prefect_api,
            "AIRFLOW_HOME": str(self.paths.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.project / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": f"cat {self.airflow_conn_file}",
        }

    @property
    def airflow_conn_file(self) -> Path:
        return self.paths.airflow_home / "sql_alchemy_conn"

    def runner_environment(self) -> dict[str, str]:
        """The environment of processes that run the pipeline: the stack's home and MLflow server."""
        return {**self.base_env(), **self.runner_env, "TAXIPIPE_HOME": str(self.settings.home),
                "TAXIPIPE_MLFLOW__TRACKING_URI": self.mlflow_url, "MLFLOW_TRACKING_URI": self.mlflow_url,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def airflow_env(self) -> dict[str, str]:
        airflow_home = self.paths.airflow_home
        return {
            **self.runner_environment(),
            **airflow_environment(airflow_home, self.project / "dags"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.ports.airflow_parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.secrets["airflow_fernet_key"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url("airflow", "psycopg2"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.ports.airflow_port),
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": self.secrets["airflow_secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["airflow_jwt_secret"],
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # a task's calls to the execution API wait longer than the 5 s default: on 2 busy
            # cores, the first minute after `up` is when they are slowest
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            # a scheduler that died: its running tasks are found and requeued within a minute
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "60",
        }

    def prefect_env(self) -> dict[str, str]:
        prefect_home = self.paths.prefect_home
        return {
            **self.runner_environment(),
            **prefect_environment(prefect_home),
            "PREFECT_API_URL": self.prefect_api,
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url("prefect", "asyncpg"),
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.ports.prefect_port),
        }

    def dagster_env(self) -> dict[str, str]:
        return {**self.runner_environment(), "DAGSTER_HOME": str(self.paths.dagster_home),
                "DAGSTER_PG_PASSWORD": self.secrets["db_dagster"]}

    def mlflow_env(self) -> dict[str, str]:
        return {**self.base_env(), **server_env(self.database_url("mlflow", "psycopg2"))}

    # --- files the services read -----------------------------------------------------------

    def write_airflow_files(self) -> None:
        """The admin's generated password (so Airflow never prints one) and the DB URL for `env`.

        The URL file has no trailing newline: Airflow takes a `_CMD` output as it is.
        """
        for path, text in ((self.paths.airflow_home / "passwords.json",
                            json.dumps({AIRFLOW_ADMIN: self.secrets["airflow_admin"]})),
                           (self.airflow_conn_file, self.database_url("airflow", "psycopg2"))):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(text)

    def write_dagster_files(self) -> None:
        """dagster.yaml: runs, events and schedules in PostgreSQL, the password from the environment.

        The driver is psycopg2: dagster-postgres closes connections with `with conn:`, which
        psycopg 3 (SQLAlchemy 2.1's default for postgresql://) takes as "close".
        """
        (self.paths.dagster_home / "dagster.yaml").write_text(
            "storage:\n"
            "  postgres:\n"
            "    postgres_db:\n"
            "      scheme: postgresql+psycopg2\n"
            "      username: dagster\n"
            "      password:\n"
            "        env: DAGSTER_PG_PASSWORD\n"
            "      hostname: 127.0.0.1\n"
            f"      port: {self.ports.postgres_port}\n"
            "      db_name: dagster\n"
            "telemetry:\n"
            "  enabled: false\n")

    # --- the services ----------------------------------------------------------------------

    def python(self, module: str, *args: str) -> list[str]:
        return [sys.executable, "-m", module, *args]

    def mlflow(self) -> Service:
        command = server_command(self.ports.mlflow_port, str(self.paths.artifacts))
        return Service("mlflow", command, self.mlflow_env,
                       lambda: _get_json(f"{self.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1")
                       is not None, self.ports.mlflow_port, self.mlflow_url, "mlflow_port")

    def airflow_health(self) -> dict[str, Any]:
        answer = _get_json(f"{self.airflow_url}/api/v2/monitor/health")
        return answer if isinstance(answer, dict) else {}

    def _airflow_component(self, component: str, service: str | None = None) -> Callable[[], bool]:
        """Airflow's health of `component`; for a scheduler or DAG processor, also a heartbeat
        since `service`'s process started: a killed one's last heartbeat counts as healthy for
        another 30 s, and must not pass for its successor's."""
        from datetime import datetime

        from taxipipe.stack.processes import read_record

        def healthy() -> bool:
            answer = self.airflow_health().get(component) or {}
            if answer.get("status") != "healthy":
                return False
            record = read_record(self.paths, service) if service else None
            beat = answer.get(f"latest_{component}_heartbeat")
            return record is None or beat is None or datetime.fromisoformat(beat).timestamp() >= record.started

        return healthy

    def airflow(self) -> list[Service]:
        env = self.airflow_env
        return [
            Service("airflow-api-server", self.python("airflow", "api-server"), env,
                    self._airflow_component("metadatabase"), self.ports.airflow_port, self.airflow_url,
                    "airflow_port"),
            Service("airflow-scheduler", self.python("taxipipe.stack.airflow_scheduler", "--skip-serve-logs"), env,
                    self._airflow_component("scheduler", "airflow-scheduler")),
            Service("airflow-dag-processor", self.python("airflow", "dag-processor"), env,
                    self._airflow_component("dag_processor", "airflow-dag-processor")),
        ]

    def prefect_server(self) -> Service:
        command = self.python("prefect", "server", "start", "--host", "127.0.0.1",
                              "--port", str(self.ports.prefect_port))
        return Service("prefect-server", command, self.prefect_env,
                       lambda: _get_json(f"{self.prefect_api}/ready") is not None, self.ports.prefect_port,
                       self.prefect_api.removesuffix("/api"), "prefect_port")

    def prefect_worker(self) -> Service:
        pool = prefect_pool(self.project)
        command = self.python("prefect", "worker", "start", "--pool", pool, "--name", PREFECT_WORKER_NAME,
                              "--type", "process")
        return Service("prefect-worker", command, self.prefect_env, lambda: self.worker_online(pool),
                       cwd=self.project)

    def dagster(self) -> list[Service]:
        """Dagster's webserver and daemon on the project's definitions (code servers use unix sockets)."""
        scripts = Path(sys.executable).parent
        definitions = ("-m", "taxipipe.runners.dagster_definitions")
        webserver = [str(scripts / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.ports.dagster_port),
                     *definitions]
        return [
            Service("dagster-webserver", webserver, self.dagster_env,
                    self.dagster_webserver_healthy,
                    self.ports.dagster_port, self.dagster_url, "dagster_port"),
            Service("dagster-daemon", [str(scripts / "dagster-daemon"), "run", *definitions], self.dagster_env,
                    self.dagster_daemon_healthy),
        ]

    def _dagster_query(self, query: str) -> Any:
        """The data of a GraphQL query to the webserver, or None when it does not answer."""
        import httpx

        try:
            return httpx.post(f"{self.dagster_url}/graphql", json={"query": query}, timeout=10).json()["data"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def dagster_webserver_healthy(self) -> bool:
        """Whether the webserver answers a query that reads its run storage (in PostgreSQL)."""
        data = self._dagster_query("{ runsOrError(limit: 1) { __typename ... on Runs { results { runId } } } }")
        try:
            return data["runsOrError"]["__typename"] == "Runs"
        except (KeyError, TypeError):
            return False

    def dagster_daemon_healthy(self) -> bool:
        """Whether every daemon the instance requires has a recent heartbeat (asked of the webserver)."""
        data = self._dagster_query("{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }")
        try:
            statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        except (KeyError, TypeError):
            return False
        return bool(statuses) and all(status["healthy"] for status in statuses if status["required"])

    def worker_online(self, pool: str) -> bool:
        """Whether the stack's worker has a recent heartbeat on its pool."""
        import httpx

        try:
            response = httpx.post(f"{self.prefect_api}/work_pools/{pool}/workers/filter", json={},
                                  timeout=10)
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        return any(worker["name"] == PREFECT_WORKER_NAME and worker["status"] == "ONLINE"
                   for worker in response.json())

    def deployments_applied(self) -> bool:
        """Whether every deployment of prefect.yaml exists on the server."""
        import yaml

        declared = yaml.safe_load((self.project / "prefect.yaml").read_text())["deployments"]
        return all(_get_json(f"{self.prefect_api}/deployments/name/ml-pipeline/{item['name']}") is not None
                   for item in declared)
