"""Prefect's worker on a host that joins a listening stack: a process worker on the stack's work
pool, named `prefect-HOSTNAME`, sending the stack's auth string with every API call.
"""

from __future__ import annotations

import sys

from taxipipe.runners.prefect.environment import prefect_environment
from taxipipe.runners.prefect.access import api, auth, login, pool
from taxipipe.stack.join_file import JoinFile
from taxipipe.stack.services import Stack, WorkerKind
from taxipipe.stack.workers import JoinedWorker, Probe, Worker, WorkerHost, http_status

NAME = "prefect"
PREFIX = f"{NAME}-"


def probe(join: JoinFile) -> Probe:
    """The work pool, read with the join file's auth string."""
    url = f"{join.prefect_api_url}/work_pools/{join.prefect_work_pool}"
    return Probe("Prefect's server", join.prefect_api_url,
                 lambda: http_status("GET", url, auth=login(join.prefect_auth_string)))


def worker(host: WorkerHost) -> Worker:
    join = host.join
    env = {**host.task_env(), **prefect_environment(host.engine_home(NAME)),
           "PREFECT_API_URL": join.prefect_api_url, "PREFECT_API_AUTH_STRING": join.prefect_auth_string}
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", join.prefect_work_pool,
               "--type", "process", "--name", f"{PREFIX}{host.hostname}", "--limit", str(host.concurrency)]
    return Worker(NAME, command, env, host.project)


def joined(stack: Stack) -> list[JoinedWorker]:
    """The workers of other hosts on the stack's pool (named `prefect-HOSTNAME`), alive when online."""
    import httpx

    try:
        response = httpx.post(f"{api(stack)}/work_pools/{pool(stack.project)}/workers/filter", json={},
                              auth=auth(stack), timeout=10)
    except httpx.HTTPError:
        return []
    if response.status_code != 200:
        return []
    return sorted(JoinedWorker(item["name"].removeprefix(PREFIX), NAME, item["status"] == "ONLINE")
                  for item in response.json() if item["name"].startswith(PREFIX))


WORKER = WorkerKind(probe, worker, joined)
