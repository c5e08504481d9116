"""`taxipipe stack join FILE`: this host's workers for a listening stack, in the foreground.

Nothing starts before every check passes: the join file is read and made by the same taxipipe
code, then each server is asked, with the file's credentials, until it answers (retries with
exponential backoff, each said in one line, up to `stack.join_timeout_seconds`): a refused login
means the credentials changed or are another stack's, and MLflow names the stack it serves (a
tag `up --listen` sets on its Default experiment), which must be the file's.

Then each engine's worker runs as a child in a session of its own, its output in
HOME/join/logs/. A worker that exits ends the others and the command (exit 1), so a supervisor
(systemd, a container's restart policy) restarts the host as a whole; SIGTERM or Ctrl-C stops
every worker (SIGTERM, SIGKILL after a grace time) and ends it with exit 0.
"""

from __future__ import annotations

import shlex
import socket
import time
from pathlib import Path
from typing import Mapping, Sequence

from taxipipe import console
from taxipipe.config import Settings
from taxipipe.errors import StackError
from taxipipe.safety.interrupts import INTERRUPTIONS, deferred
from taxipipe.stack import dask_worker, join_file, processes
from taxipipe.stack.join_file import JoinFile
from taxipipe.stack.processes import PidRecord
from taxipipe.stack.services import Engine, WorkerKind, project_dir
from taxipipe.stack.workers import Probe, WorkerHost, http_status

#: The MLflow tag of the Default experiment naming the stack a server belongs to.
STACK_ID_TAG = "taxipipe.stack_id"
DEFAULT_EXPERIMENT = "0"
#: Seconds a worker has to end after SIGTERM before it is killed.
GRACE_SECONDS = 10
#: The longest wait between two attempts to reach a server.
MAX_BACKOFF_SECONDS = 30.0


def publish_stack_id(mlflow_url: str, login: tuple[str, str], stack_id: str) -> None:
    """Tag the server's Default experiment with the stack's id, which joining hosts check."""
    import httpx

    response = httpx.post(f"{mlflow_url}/api/2.0/mlflow/experiments/set-experiment-tag", auth=login, timeout=30,
                          json={"experiment_id": DEFAULT_EXPERIMENT, "key": STACK_ID_TAG, "value": stack_id})
    if response.status_code != 200:
        raise StackError(f"tagging MLflow's Default experiment with the stack's id failed: HTTP {response.status_code}")


def served_stack_id(join: JoinFile) -> str | None:
    """The id of the stack whose MLflow server answers at the join file's address."""
    import httpx

    response = httpx.get(f"{join.mlflow_url}/api/2.0/mlflow/experiments/get",
                         params={"experiment_id": DEFAULT_EXPERIMENT},
                         auth=(join.mlflow_username, join.mlflow_password), timeout=10)
    tags = response.json().get("experiment", {}).get("tags", []) if response.status_code == 200 else []
    return next((tag["value"] for tag in tags if tag.get("key") == STACK_ID_TAG), None)


def mlflow_probe(join: JoinFile) -> Probe:
    url = join.mlflow_url
    return Probe("MLflow", url, lambda: http_status(
        "GET", f"{url}/api/2.0/mlflow/experiments/get", params={"experiment_id": DEFAULT_EXPERIMENT},
        auth=(join.mlflow_username, join.mlflow_password)))


def reach(probe: Probe, timeout: float, path: Path) -> None:
    """Ask `probe`'s server until it answers, with exponential backoff; refuse a rejected login."""
    started = time.monotonic()
    attempt, wait = 1, 1.0
    while True:
        status = probe.call()
        if status in (401, 403):
            raise StackError(f"{probe.server} at {probe.url} does not accept the credentials of {path} (HTTP "
                             f"{status}): the join file's credentials are not accepted (changed since, or "
                             "another stack's): get a new join file")
        if status is not None and status < 400:
            return
        if status is not None:
            raise StackError(f"{probe.server} at {probe.url} answered HTTP {status} with the credentials of {path}: "
                             "is it the server of a taxipipe stack started with --listen?")
        if time.monotonic() - started + wait > timeout:
            raise StackError(f"{probe.server} at {probe.url} did not answer within {timeout:.0f} s ({attempt} "
                             "attempts): is the stack up with --listen on that address, and is it reachable "
                             "from this host?")
        console.say(f"⏳ {probe.server} at {probe.url} does not answer (attempt {attempt}, next in {wait:.0f} s)")
        time.sleep(wait)
        attempt, wait = attempt + 1, min(wait * 2, MAX_BACKOFF_SECONDS)


def choose(engines: Sequence[Engine], names: Sequence[str] | None) -> dict[str, WorkerKind]:
    """The workers of every engine that has one, or of the engines named (each must have one)."""
    workers = {**{engine.name: engine.worker for engine in engines if engine.worker is not None},
               dask_worker.NAME: dask_worker.WORKER}
    if names is None:
        return workers
    unknown = [name for name in names if name not in workers]
    if unknown:
        raise StackError(f"no worker for {', '.join(unknown)}: --engines takes {', '.join(workers)}")
    return {name: workers[name] for name in names}


def check(join: JoinFile, path: Path, workers: Mapping[str, WorkerKind], timeout: float) -> None:
    """Every check before anything starts: MLflow, the stack it serves, each engine's server."""
    reach(mlflow_probe(join), timeout, path)
    served = served_stack_id(join)
    if served != join.stack_id:
        raise StackError(f"{path} is the join file of stack {join.stack_id}, but the servers at {join.address} "
                         f"are stack {served or 'of no known id'}: use the join file that stack's `up --listen` "
                         "wrote")
    for worker in workers.values():
        reach(worker.probe(join), timeout, path)


def read_checked(settings: Settings, path: Path, workers: Mapping[str, WorkerKind]) -> tuple[Path, JoinFile]:
    """The join file at `path` (absolute) after every check `join` makes for `workers`."""
    path = path.expanduser().absolute()
    joined = join_file.read(path)
    join_file.check_version(joined, path)
    check(joined, path, workers, settings.stack.join_timeout_seconds)
    return path, joined


def environment(settings: Settings, path: Path, engines: Sequence[Engine]) -> str:
    """`export` lines that point a shell on this host (and all it runs) at the stack of the join
    file: MLflow with its login, the settings the stack's runs get, and the Dask scheduler with the
    file's certificates written under this host's home; after the checks `join` makes."""
    path, joined = read_checked(settings, path, choose(engines, None))
    tls = dask_worker.worker_home(settings.home) / "tls"
    dask_worker.write_tls(joined, tls)
    exported = {**joined.runner_env, "MLFLOW_TRACKING_URI": joined.mlflow_url,
                "MLFLOW_TRACKING_USERNAME": joined.mlflow_username, "MLFLOW_TRACKING_PASSWORD": joined.mlflow_password,
                "TAXIPIPE_MLFLOW__TRACKING_URI": joined.mlflow_url,
                "TAXIPIPE_COMPUTE__DASK_SCHEDULER": joined.dask_scheduler, "TAXIPIPE_COMPUTE__DASK_TLS_DIR": str(tls)}
    return "\n".join([f"# stack {joined.stack_id} at {joined.address}, from {path}"]
                     + [f"export {key}={shlex.quote(value)}" for key, value in exported.items()])


def join(settings: Settings, path: Path, engines: Sequence[Engine], names: Sequence[str] | None = None) -> int:
    """Check `path`, start this host's workers and watch them until a signal or a worker's exit."""
    chosen = choose(engines, names)
    console.say(f"🏠 worker home {settings.home}, joining with {path}")
    path, joined = read_checked(settings, path, chosen)
    host = WorkerHost(joined, socket.gethostname(), settings.home, project_dir(settings),
                      settings.stack.worker_concurrency)
    host.create(list(chosen))
    running: list[PidRecord] = []
    try:
        for name, kind in chosen.items():
            worker = kind.worker(host)
            log = host.log(name)
            running.append(processes.spawn(name, worker.command, worker.env, log, worker.cwd))
            console.say(f"✅ {name} worker {host.hostname} started (pid {running[-1].pid}, log {log})")
        console.say("🟢 joined; SIGTERM or Ctrl-C stops the workers")
        dead = _watch(running)
    except INTERRUPTIONS:
        with deferred():
            _stop(running)
        console.say(f"⏹️  {len(running)} worker{'s' if len(running) != 1 else ''} stopped")
        return 0
    with deferred():
        _stop(running)
    raise StackError(f"the {dead.service} worker exited ({_exit_status(dead)}); see {host.log(dead.service)}: "
                     "the other workers are stopped")


def _watch(running: list[PidRecord]) -> PidRecord:
    """Wait until a worker's process exits; that worker."""
    while True:
        for record in running:
            if not record.leader_alive():
                return record
        time.sleep(0.5)


def _exit_status(record: PidRecord) -> str:
    import psutil

    try:
        code = psutil.Process(record.pid).wait(timeout=1)
    except psutil.Error:
        return "its status is unknown"
    return f"status {code}" if code is not None and code >= 0 else f"signal {-(code or 0)}"


def _stop(running: list[PidRecord]) -> None:
    processes.stop_sessions(running, GRACE_SECONDS)
