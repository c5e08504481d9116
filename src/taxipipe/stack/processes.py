"""Detached processes with a log and a pid file; a service is every process of its session.

Each service starts in a session of its own, so its children (executor workers, uvicorn
workers, flow runs) carry the session id of the process we started, even once that one has
died: `stop` ends the whole session, and nothing is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import psutil

from taxipipe.errors import StackError
from taxipipe.stack.state import StackPaths


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds: the session leader and where the service answers."""

    service: str
    pid: int
    started: float
    url: str | None = None
    port: int | None = None

    def leader_alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return (abs(process.create_time() - self.started) < 1.0
                    and process.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def members(self) -> list[psutil.Process]:
        """Every live process of the service's session (the leader and all it started)."""
        found = []
        for process in psutil.process_iter(["create_time", "status"]):
            try:
                if (os.getsid(process.pid) == self.pid
                        and process.info["create_time"] >= self.started - 1.0
                        and process.info["status"] != psutil.STATUS_ZOMBIE):
                    found.append(process)
            except (OSError, psutil.Error):
                continue
        return found


def pid_file(paths: StackPaths, service: str) -> Path:
    return paths.run / f"{service}.json"


def read_record(paths: StackPaths, service: str) -> PidRecord | None:
    path = pid_file(paths, service)
    if not path.exists():
        return None
    return PidRecord(**json.loads(path.read_text()))


def write_record(paths: StackPaths, record: PidRecord) -> None:
    path = pid_file(paths, record.service)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(record)))
    temporary.replace(path)


def start(paths: StackPaths, service: str, command: Sequence[str], env: Mapping[str, str],
          cwd: Path | None = None, url: str | None = None, port: int | None = None) -> PidRecord:
    """Start `command` in a new session, output appended to logs/{service}.log."""
    record = spawn(service, command, env, paths.log(service), cwd, url, port)
    write_record(paths, record)
    return record


def spawn(name: str, command: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None,
          url: str | None = None, port: int | None = None) -> PidRecord:
    """Start `command` in a session of its own, output appended to `log`; its record."""
    with open(log, "ab") as output:
        process = subprocess.Popen(list(command), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    return PidRecord(name, process.pid, psutil.Process(process.pid).create_time(), url, port)


def stop(paths: StackPaths, service: str, grace_seconds: float = 3) -> None:
    """SIGTERM every process of the service's session at once; SIGKILL what outlives the grace time.

    Most end within a second of SIGTERM; servers that wait for open connections and Airflow's
    scheduler, which waits for its running tasks, are cut short (its next start requeues them).
    """
    record = read_record(paths, service)
    if record is None:
        return
    stop_members(record, grace_seconds)
    pid_file(paths, service).unlink(missing_ok=True)


def stop_members(record: PidRecord, grace_seconds: float) -> None:
    """End every process left in the record's session: SIGTERM, then SIGKILL."""
    stop_sessions([record], grace_seconds)


def stop_sessions(records: Sequence[PidRecord], grace_seconds: float) -> None:
    """End every process left in the records' sessions at once: SIGTERM, then SIGKILL."""
    members = [process for record in records for process in record.members()]
    for process in members:
        _signal(process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=grace_seconds)
    for process in alive:
        _signal(process.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def wait_until(condition: Callable[[], bool], seconds: float, interval: float = 0.25) -> bool:
    """Poll `condition` until it holds or `seconds` pass; whether it held."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on host:port (a bind succeeds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def require_free_port(port: int, service: str, setting: str, host: str = "127.0.0.1") -> None:
    """Refuse, in one sentence, a port something else holds (or an address not of this host)."""
    if port_is_free(port, host):
        return
    if not port_is_free(0, host):
        raise StackError(f"{host} is not an address of this host: give stack.listen (--listen) one of its "
                         "addresses, the one worker hosts reach")
    raise StackError(
        f"port {port} on {host}, wanted by {service}, is taken: stop what listens there or set "
        f"stack.{setting} (TAXIPIPE_STACK__{setting.upper()}) to a free port")


def run_checked(command: Sequence[str], env: Mapping[str, str], what: str, log: Path,
                cwd: Path | None = None, timeout: float = 600) -> None:
    """Run a set-up command to completion, output appended to `log`; a failure names the log."""
    with open(log, "ab") as output:
        result = subprocess.run(list(command), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=output, stderr=subprocess.STDOUT, timeout=timeout)
    if result.returncode != 0:
        raise StackError(f"{what} failed (exit {result.returncode}); its output is in {log}")
