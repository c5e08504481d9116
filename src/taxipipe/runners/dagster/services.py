"""Dagster in `taxipipe stack`: the webserver and the daemon on the project's definitions, runs,
events and schedules in the stack's PostgreSQL (code servers use unix sockets)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from taxipipe.stack.control import start_together
from taxipipe.stack.services import Engine, Service, Stack

NAME = "dagster"
SERVICES = ("dagster-webserver", "dagster-daemon")
DEFINITIONS = ("-m", "taxipipe.runners.dagster.definitions")


def url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports.dagster_port}"


def environment(stack: Stack) -> dict[str, str]:
    return {**stack.runner_environment(), "DAGSTER_HOME": str(stack.home(NAME)),
            "DAGSTER_PG_PASSWORD": stack.secrets["db_dagster"]}


def write_files(stack: Stack) -> None:
    """dagster.yaml: runs, events and schedules in PostgreSQL, the password from the environment.

    The driver is psycopg2: dagster-postgres closes connections with `with conn:`, which
    psycopg 3 (SQLAlchemy 2.1's default for postgresql://) takes as "close".
    """
    (stack.home(NAME) / "dagster.yaml").write_text(
        "storage:\n"
        "  postgres:\n"
        "    postgres_db:\n"
        "      scheme: postgresql+psycopg2\n"
        "      username: dagster\n"
        "      password:\n"
        "        env: DAGSTER_PG_PASSWORD\n"
        "      hostname: 127.0.0.1\n"
        f"      port: {stack.ports.postgres_port}\n"
        "      db_name: dagster\n"
        "telemetry:\n"
        "  enabled: false\n")


def _query(stack: Stack, query: str) -> Any:
    """The data of a GraphQL query to the webserver, or None when it does not answer."""
    import httpx

    try:
        return httpx.post(f"{url(stack)}/graphql", json={"query": query}, timeout=10).json()["data"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def webserver_healthy(stack: Stack) -> bool:
    """Whether the webserver answers a query that reads its run storage (in PostgreSQL)."""
    data = _query(stack, "{ runsOrError(limit: 1) { __typename ... on Runs { results { runId } } } }")
    try:
        return data["runsOrError"]["__typename"] == "Runs"
    except (KeyError, TypeError):
        return False


def daemon_healthy(stack: Stack) -> bool:
    """Whether every daemon the instance requires has a recent heartbeat (asked of the webserver)."""
    data = _query(stack, "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }")
    try:
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    except (KeyError, TypeError):
        return False
    return bool(statuses) and all(status["healthy"] for status in statuses if status["required"])


def services(stack: Stack) -> list[Service]:
    """Dagster's webserver and daemon on the project's definitions."""
    def env() -> dict[str, str]:
        return environment(stack)

    scripts = Path(sys.executable).parent
    webserver = [str(scripts / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(stack.ports.dagster_port),
                 *DEFINITIONS]
    return [
        Service("dagster-webserver", webserver, env, lambda: webserver_healthy(stack), stack.ports.dagster_port,
                url(stack), "dagster_port"),
        Service("dagster-daemon", [str(scripts / "dagster-daemon"), "run", *DEFINITIONS], env,
                lambda: daemon_healthy(stack)),
    ]


def start(stack: Stack, services: Mapping[str, Service], missing: set[str], databases: Mapping[str, int]) -> None:
    names = [name for name in SERVICES if name in missing]
    if not names:
        return
    write_files(stack)
    start_together(stack, [services[name] for name in names])


ENGINE = Engine(NAME, SERVICES, services, start, databases=("dagster",))
