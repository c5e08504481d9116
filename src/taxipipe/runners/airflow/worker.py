"""Airflow's worker on a host that joins a listening stack: `airflow edge worker`.

An edge worker reaches only the API server (the edge API and the execution API), with tokens it
signs with the stack's JWT secret; the DAG files are at the same place under the host's checkout.
The server knows its workers from edge3's `edge_worker` table.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urljoin

from taxipipe.runners.airflow.environment import airflow_environment
from taxipipe.stack.join_file import JoinFile
from taxipipe.stack.services import Stack, WorkerKind
from taxipipe.stack.workers import JoinedWorker, Probe, Worker, WorkerHost, http_status

NAME = "airflow"
EDGE_EXECUTOR = "airflow.providers.edge3.executors.EdgeExecutor"
#: What a worker's API path carries before the edge API's own routes.
EDGE_PREFIX = "/edge_worker/v1/"
#: The states of a worker that runs or takes tasks.
LIVE_STATES = ("starting", "running", "idle", "maintenance request", "maintenance pending", "maintenance mode")
#: A live worker's heartbeat is at most this old (three of edge3's default 30 s intervals).
HEARTBEAT_SECONDS = 90


def api_base(join: JoinFile) -> str:
    """The API server's URL, from the edge API's."""
    return join.airflow_edge_api_url.split(EDGE_PREFIX)[0]


def token(secret: str, method: str) -> str:
    """A token as an edge worker signs it: for one edge API `method`, valid for 30 s."""
    import jwt

    now = int(time.time())
    claims = {"jti": uuid.uuid4().hex, "aud": "api", "nbf": now, "iat": now, "exp": now + 30, "method": method}
    return jwt.encode(claims, secret, algorithm="HS512")


def probe(join: JoinFile) -> Probe:
    """A state report of a job that does not exist (edge3 ignores it), signed with the join
    file's secret: 403 when the server signs with another."""
    method = "jobs/state/taxipipe_join_check/check/check/1/-1/queued"
    url = urljoin(join.airflow_edge_api_url, method)  # as the worker joins them: rpcapi gives way
    return Probe("Airflow's API server", api_base(join), lambda: http_status(
        "PATCH", url, json={}, headers={"Authorization": token(join.airflow_jwt_secret, method)}))


def worker(host: WorkerHost) -> Worker:
    join = host.join
    env = {**host.task_env(),
           **airflow_environment(host.engine_home(NAME), host.project / "dags"),
           "AIRFLOW__CORE__EXECUTOR": EDGE_EXECUTOR,
           "AIRFLOW__EDGE__API_URL": join.airflow_edge_api_url,
           "AIRFLOW__API_AUTH__JWT_SECRET": join.airflow_jwt_secret,
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_base(join)}/execution/",
           # as on the server: a task's calls wait longer than the 5 s default on busy cores
           "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60"}
    command = [sys.executable, "-m", "airflow", "edge", "worker", "-H", host.hostname, "-c", str(host.concurrency)]
    return Worker(NAME, command, env, host.project)


def joined(stack: Stack) -> list[JoinedWorker]:
    """The edge workers in the stack's Airflow database, alive when live with a recent heartbeat."""
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=stack.ports.postgres_port, user=NAME, dbname=NAME,
                             password=stack.secrets[f"db_{NAME}"], connect_timeout=10) as connection:
            rows = connection.execute("SELECT worker_name, state, last_update FROM edge_worker "
                                      "ORDER BY worker_name").fetchall()
    except psycopg.Error:
        return []
    recent = datetime.now(timezone.utc) - timedelta(seconds=HEARTBEAT_SECONDS)
    return [JoinedWorker(name, NAME, state in LIVE_STATES and last is not None and last >= recent)
            for name, state, last in rows]


WORKER = WorkerKind(probe, worker, joined)
