"""A Dask worker on a host that joins a listening stack: mutual TLS to the stack's scheduler with
the certificates the join file carries, TLS on every port it listens on, no dashboard, and its
files under the host's home (HOME/join/dask), so it needs no disk shared with the stack.

A run's train step sends the window to the workers (`compute/dask.py`), so a worker reads no
file of the run's home.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from taxipipe.safety.atomic import write_private
from taxipipe.stack import dask_roster, dask_scheduler
from taxipipe.stack.certificates import TlsFiles
from taxipipe.stack.join_file import JoinFile
from taxipipe.stack.services import Stack, WorkerKind
from taxipipe.stack.workers import JoinedWorker, Probe, Worker, WorkerHost

NAME = "dask"

#: The files of the stack's certificates under the worker's TLS folder, as the scheduler's are named.
CA, CERT, KEY = "ca.pem", "client.pem", "client-key.pem"


def worker_home(home: Path) -> Path:
    """HOME/join/dask: the worker's TLS files and its local directory (spilled data, packages)."""
    return home / "join" / "dask"


def write_tls(join: JoinFile, folder: Path) -> tuple[Path, Path, Path]:
    """The join file's CA, certificate and key as files in `folder` (0600, written atomically)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = folder / CA, folder / CERT, folder / KEY
    for path, pem in zip(paths, (join.dask_ca_pem, join.dask_cert_pem, join.dask_key_pem)):
        write_private(path, pem)
    return paths


def worker_command(join: JoinFile, home: Path, hostname: str | None = None,
                   nthreads: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The `dask worker` command (and its environment) that serves `join`'s scheduler from this host.

    It is named after the host (`hostname`, default this machine's), runs `nthreads` threads
    (default: one per core), and listens with TLS only; its HTTP routes (health, metrics) stay on
    127.0.0.1.
    """
    folder = worker_home(home)
    ca, cert, key = write_tls(join, folder / "tls")
    local = folder / "work"
    local.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [sys.executable, "-m", "distributed.cli.dask_worker", join.dask_scheduler,
               "--name", hostname or socket.gethostname(), "--nthreads", str(nthreads or os.cpu_count() or 1),
               "--protocol", "tls", "--tls-ca-file", str(ca), "--tls-cert", str(cert), "--tls-key", str(key),
               "--no-dashboard", "--dashboard-address", "127.0.0.1:0", "--local-directory", str(local)]
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
           "DASK_TEMPORARY_DIRECTORY": str(local)}
    return command, env


def probe(join: JoinFile) -> Probe:
    """An identity call to the scheduler with the join file's certificate (in a folder of its own)."""
    import tempfile

    def call() -> int | None:
        with tempfile.TemporaryDirectory() as folder:
            write_tls(join, Path(folder))
            return 200 if dask_scheduler.answers(join.dask_scheduler, TlsFiles(Path(folder))) else None

    return Probe("Dask's scheduler", join.dask_scheduler, call)


def worker(host: WorkerHost) -> Worker:
    command, env = worker_command(host.join, host.home, host.hostname, host.concurrency)
    return Worker(NAME, command, env)


def joined(stack: Stack) -> list[JoinedWorker]:
    """Every worker that joined the scheduler (named after its host), alive when the scheduler
    lists it now (asked with the stack's client certificate)."""
    answer = dask_scheduler.identity(dask_scheduler.address(stack), TlsFiles(stack.paths.tls)) or {}
    present = {str(info.get("name", address)) for address, info in answer.get("workers", {}).items()}
    return sorted(JoinedWorker(name, NAME, name in present)
                  for name in present | set(dask_roster.read(stack.paths.dask_roster)))


WORKER = WorkerKind(probe, worker, joined)
