"""Airflow in `taxipipe stack`: the API server, the scheduler (LocalExecutor) and the DAG
processor, on the stack's PostgreSQL.

The scheduler runs without its log server (which would bind every interface); the API server
reads task logs from the shared log folder. The admin's password is generated, so Airflow never
prints one.

A listening stack (`stack.listen`) runs no task itself: its executor is the EdgeExecutor, whose
workers on other hosts reach only the API server on the listen address, with tokens signed by
the stack's JWT secret (`airflow edge worker`; their log servers run on the workers).
"""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from taxipipe.runners.airflow.environment import airflow_environment
from taxipipe.runners.airflow.worker import EDGE_EXECUTOR, WORKER
from taxipipe.stack import processes
from taxipipe.stack.control import say, start_together
from taxipipe.stack.services import Engine, Service, Stack, get_json
from taxipipe.stack.state import token

NAME = "airflow"
ADMIN = "admin"
SERVICES = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor")


def url(stack: Stack) -> str:
    return f"http://{stack.host}:{stack.ports.airflow_port}"


def edge_api_url(stack: Stack) -> str:
    """Where edge workers call the API server (they derive the execution API's URL from it)."""
    return f"{url(stack)}/edge_worker/v1/rpcapi"


def conn_file(stack: Stack) -> Path:
    """The database URL, for the shells `taxipipe stack env` points at the stack."""
    return stack.home(NAME) / "sql_alchemy_conn"


def passwords_file(stack: Stack) -> Path:
    return stack.home(NAME) / "passwords.json"


def secrets() -> dict[str, str]:
    return {
        "airflow_admin": token(12),
        # HS512 wants a key of 64 bytes or more
        "airflow_jwt_secret": token(48),
        "airflow_secret_key": token(32),
        "airflow_fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }


def executor_env(stack: Stack) -> dict[str, str]:
    """The LocalExecutor, or on a listening stack the EdgeExecutor with its API on the listen address."""
    if not stack.listening:
        return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    return {"AIRFLOW__CORE__EXECUTOR": EDGE_EXECUTOR, "AIRFLOW__EDGE__API_ENABLED": "True",
            "AIRFLOW__EDGE__API_URL": edge_api_url(stack)}


def shell_env(stack: Stack) -> dict[str, str]:
    return {**airflow_environment(stack.home(NAME), stack.project / "dags"), **executor_env(stack),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": f"cat {conn_file(stack)}"}


def join(stack: Stack) -> dict[str, str]:
    return {"airflow_edge_api_url": edge_api_url(stack), "airflow_jwt_secret": stack.secrets["airflow_jwt_secret"]}


def environment(stack: Stack) -> dict[str, str]:
    airflow_home = stack.home(NAME)
    return {
        **stack.runner_environment(),
        **airflow_environment(airflow_home, stack.project / "dags"),
        **executor_env(stack),
        "AIRFLOW__CORE__PARALLELISM": str(stack.ports.airflow_parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": stack.secrets["airflow_fernet_key"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url(stack)}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(stack)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": stack.database_url("airflow", "psycopg2"),
        "AIRFLOW__API__HOST": stack.host,
        "AIRFLOW__API__PORT": str(stack.ports.airflow_port),
        "AIRFLOW__API__BASE_URL": url(stack),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": stack.secrets["airflow_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": stack.secrets["airflow_jwt_secret"],
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        # a task's calls to the execution API wait longer than the 5 s default: on 2 busy
        # cores, the first minute after `up` is when they are slowest
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        # a scheduler that died: its running tasks are found and requeued within a minute
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "60",
    }


def write_files(stack: Stack) -> None:
    """The admin's generated password (so Airflow never prints one) and the DB URL for `env`.

    The URL file has no trailing newline: Airflow takes a `_CMD` output as it is.
    """
    for path, text in ((passwords_file(stack), json.dumps({ADMIN: stack.secrets["airflow_admin"]})),
                       (conn_file(stack), stack.database_url("airflow", "psycopg2"))):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(text)


def health(stack: Stack) -> dict[str, Any]:
    answer = get_json(f"{url(stack)}/api/v2/monitor/health")
    return answer if isinstance(answer, dict) else {}


def _component(stack: Stack, component: str, service: str | None = None) -> Callable[[], bool]:
    """Airflow's health of `component`; for a scheduler or DAG processor, also a heartbeat
    since `service`'s process started: a killed one's last heartbeat counts as healthy for
    another 30 s, and must not pass for its successor's."""

    def healthy() -> bool:
        answer = health(stack).get(component) or {}
        if answer.get("status") != "healthy":
            return False
        record = processes.read_record(stack.paths, service) if service else None
        beat = answer.get(f"latest_{component}_heartbeat")
        return record is None or beat is None or datetime.fromisoformat(beat).timestamp() >= record.started

    return healthy


def services(stack: Stack) -> list[Service]:
    def env() -> dict[str, str]:
        return environment(stack)

    return [
        Service("airflow-api-server", stack.python("airflow", "api-server"), env,
                _component(stack, "metadatabase"), stack.ports.airflow_port, url(stack), "airflow_port",
                host=stack.host),
        Service("airflow-scheduler", stack.python("taxipipe.runners.airflow.scheduler", "--skip-serve-logs"), env,
                _component(stack, "scheduler", "airflow-scheduler")),
        Service("airflow-dag-processor", stack.python("airflow", "dag-processor"), env,
                _component(stack, "dag_processor", "airflow-dag-processor")),
    ]


def _migrate(stack: Stack, database_oid: int) -> None:
    """`airflow db migrate`, unless this Airflow version already migrated this very database."""
    from importlib.metadata import version

    stamp = stack.home(NAME) / "migrated"
    wanted = f"apache-airflow {version('apache-airflow')} database {database_oid}"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    started = time.monotonic()
    processes.run_checked(stack.python("airflow", "db", "migrate"), environment(stack),
                          "airflow db migrate", stack.paths.log("airflow-migrate"), timeout=900)
    stamp.write_text(wanted)
    say(f"✅ airflow db migrate done in {time.monotonic() - started:.1f}s")


def start(stack: Stack, services: Mapping[str, Service], missing: set[str], databases: Mapping[str, int]) -> None:
    """Migrate the database when needed, then start the missing parts together."""
    names = [name for name in SERVICES if name in missing]
    if not names:
        return
    write_files(stack)
    _migrate(stack, databases["airflow"])
    start_together(stack, [services[name] for name in names])


def ready_note(stack: Stack) -> str:
    return f"Airflow login '{ADMIN}', password in {passwords_file(stack)}"


ENGINE = Engine(NAME, SERVICES, services, start, databases=("airflow",), secrets=secrets,
                credentials=("airflow_admin", "airflow_jwt_secret", "airflow_secret_key"), shell_env=shell_env,
                join=join, stale=("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD", "AIRFLOW__CORE__EXECUTOR",
                                  "AIRFLOW__EDGE__API_ENABLED", "AIRFLOW__EDGE__API_URL"), ready_note=ready_note,
                worker=WORKER)
