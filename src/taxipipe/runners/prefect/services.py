"""Prefect in `taxipipe stack`: its server on the stack's PostgreSQL, prefect.yaml's deployments
on a work pool, and a process worker that runs them.

On a listening stack (`stack.listen`) the server listens on that address and its whole API
demands the stack's auth string (basic auth), which every client here sends too; that stack
starts no worker: the Prefect workers of the hosts that join it (`stack join`) take the pool's runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

from taxipipe.errors import StackError
from taxipipe.runners.prefect.access import AUTH_USER, api, auth, pool
from taxipipe.runners.prefect.environment import prefect_environment
from taxipipe.runners.prefect.worker import WORKER
from taxipipe.stack import processes
from taxipipe.stack.control import say, start_missing
from taxipipe.stack.services import Engine, Service, Stack, get_json
from taxipipe.stack.state import token

NAME = "prefect"
WORKER_NAME = "taxipipe-stack"
SERVICES = ("prefect-server", "prefect-worker")


def secrets() -> dict[str, str]:
    return {"prefect_auth": f"{AUTH_USER}:{token()}"}


def client_env(stack: Stack) -> dict[str, str]:
    """What a Prefect client needs: the API's URL, and the auth string of a listening stack."""
    return {"PREFECT_API_URL": api(stack),
            **({"PREFECT_API_AUTH_STRING": stack.secrets["prefect_auth"]} if stack.listening else {})}


def join(stack: Stack) -> dict[str, str]:
    return {"prefect_api_url": api(stack), "prefect_auth_string": stack.secrets["prefect_auth"],
            "prefect_work_pool": pool(stack.project)}


def environment(stack: Stack) -> dict[str, str]:
    return {
        **stack.runner_environment(),
        **prefect_environment(stack.home(NAME)),
        **client_env(stack),
        **({"PREFECT_SERVER_API_AUTH_STRING": stack.secrets["prefect_auth"]} if stack.listening else {}),
        "PREFECT_API_DATABASE_CONNECTION_URL": stack.database_url("prefect", "asyncpg"),
        "PREFECT_SERVER_API_HOST": stack.host,
        "PREFECT_SERVER_API_PORT": str(stack.ports.prefect_port),
    }


def worker_online(stack: Stack, work_pool: str) -> bool:
    """Whether the stack's worker has a recent heartbeat on its pool."""
    import httpx

    try:
        response = httpx.post(f"{api(stack)}/work_pools/{work_pool}/workers/filter", json={}, auth=auth(stack),
                              timeout=10)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    return any(worker["name"] == WORKER_NAME and worker["status"] == "ONLINE" for worker in response.json())


def deployments_applied(api_url: str, project: Path, login: tuple[str, str] | None = None) -> bool:
    """Whether every deployment of `project`'s prefect.yaml exists on the server at `api_url`
    (asked with basic-auth `login`) with its entrypoint (a stack made before the flow's module
    moved names the old one)."""
    import yaml

    declared = yaml.safe_load((project / "prefect.yaml").read_text())["deployments"]
    for item in declared:
        answer = get_json(f"{api_url}/deployments/name/ml-pipeline/{item['name']}", login)
        if not isinstance(answer, dict) or answer.get("entrypoint") != item["entrypoint"]:
            return False
    return True


def services(stack: Stack) -> list[Service]:
    def env() -> dict[str, str]:
        return environment(stack)

    server = stack.python("prefect", "server", "start", "--host", stack.host, "--port", str(stack.ports.prefect_port))
    work_pool = pool(stack.project)
    worker = stack.python("prefect", "worker", "start", "--pool", work_pool, "--name", WORKER_NAME, "--type", "process")
    return [
        Service("prefect-server", server, env, lambda: get_json(f"{api(stack)}/ready", auth(stack)) is not None,
                stack.ports.prefect_port, api(stack).removesuffix("/api"), "prefect_port", host=stack.host),
        Service("prefect-worker", worker, env, lambda: worker_online(stack, work_pool), cwd=stack.project),
    ]


def start(stack: Stack, services: Mapping[str, Service], missing: set[str], databases: Mapping[str, int]) -> None:
    """The server, then the work pool and prefect.yaml's deployments when missing, then the worker
    (none on a listening stack)."""
    import httpx

    start_missing(stack, services["prefect-server"], missing)
    work_pool = pool(stack.project)
    answer = httpx.post(f"{api(stack)}/work_pools/", json={"name": work_pool, "type": "process"}, auth=auth(stack),
                        timeout=30)
    if answer.status_code not in (201, 409):
        raise StackError(f"creating the Prefect work pool '{work_pool}' failed: HTTP {answer.status_code}")
    if not deployments_applied(api(stack), stack.project, auth(stack)):
        started = time.monotonic()
        processes.run_checked(stack.python("prefect", "--no-prompt", "deploy", "--all"), environment(stack),
                              "prefect deploy --all", stack.paths.log("prefect-deploy"), cwd=stack.project)
        say(f"✅ prefect.yaml deployed to work pool '{work_pool}' in {time.monotonic() - started:.1f}s")
    if "prefect-worker" in services:
        start_missing(stack, services["prefect-worker"], missing)


ENGINE = Engine(NAME, SERVICES, services, start, databases=("prefect",), secrets=secrets,
                credentials=("prefect_auth",), shell_env=client_env, join=join,
                stale=("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"), worker=WORKER,
                local_only=("prefect-worker",))
