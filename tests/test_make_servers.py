"""`make airflow-ui`, `make prefect-server` and `make dagster-ui`: the ports they are given, loopback only."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import json
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from tests.helpers import REPO, free_port, wait_for


def listening(session: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that the processes of `session` listen on."""
    inodes: set[str] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) != session:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (OSError, ProcessLookupError):
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                if width == 4:
                    host = socket.inet_ntop(socket.AF_INET, raw[::-1])
                else:
                    host = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
                found.add((host, int(port, 16)))
    return found


def airflow_components_up(port: int) -> bool:
    """Whether Airflow's scheduler, triggerer and DAG processor report healthy (their sockets are open)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as answer:
        health = json.load(answer)
    return all((health.get(part) or {}).get("status") == "healthy"
               for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))


def dagster_code_loaded(port: int) -> bool:
    """Whether `dagster dev` has loaded its code location (its code server is up)."""
    query = json.dumps({"query": "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=query.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        entries = json.load(answer)["data"]["workspaceOrError"].get("locationEntries") or []
    return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)


def serve(target: str, variable: str, home: Path, ready_path: str, timeout: float = 300,
          settled: Callable[[int], bool] = lambda port: True) -> str:
    """Start `make TARGET VARIABLE=port`, wait until it answers and every component it starts is
    up (`settled`), check its sockets, stop it; its output."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "AIRFLOW", "PREFECT"))}
    environment["TAXIPIPE_HOME"] = str(home)
    process = subprocess.Popen(["make", "-s", target, f"{variable}={port}"], cwd=REPO, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def answers() -> bool:
        assert process.poll() is None, process.stdout.read().decode()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=5):
                pass
            return settled(port)
        except (OSError, ValueError, KeyError):
            return False

    try:
        wait_for(answers, f"{target} answers on port {port}", timeout, interval=0.5)
        sockets = listening(process.pid)
        assert ("127.0.0.1", port) in sockets
        assert {host for host, _ in sockets} <= {"127.0.0.1", "::1"}, sockets
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.stdout.read().decode()


@pytest.mark.slow
def test_prefect_server_takes_its_port_from_prefect_port(tmp_path: Path) -> None:
    serve("prefect-server", "PREFECT_PORT", tmp_path / "home", "/api/health")


@pytest.mark.slow
def test_airflow_ui_and_its_components_listen_on_loopback_only(tmp_path: Path) -> None:
    serve("airflow-ui", "AIRFLOW_PORT", tmp_path / "home", "/api/v2/monitor/health", timeout=600,
          settled=airflow_components_up)


@pytest.mark.slow
def test_dagster_ui_listens_on_loopback_only_with_its_state_under_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    output = serve("dagster-ui", "DAGSTER_PORT", home, "/server_info", settled=dagster_code_loaded)
    assert "Warning" not in output, output[-3000:]
    assert "telemetry" in (home / "dagster" / "dagster.yaml").read_text()
    assert (home / "dagster" / "history" / "runs.db").is_file()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_make_env_creates_the_environment_without_listing_every_package(tmp_path: Path) -> None:
    """`make run`'s first step: one line saying what it does, not uv's `+ package==version` list;
    synced again through a linked .venv, its scripts still name the environment's real path.

    COMPILE=0 skips compiling the packages (a minute of CPU); the suite's own `make test` compiles.
    """
    venv = tmp_path / "venv"
    result = subprocess.run(["make", "env", f"VENV={venv}", "COMPILE=0"], cwd=REPO, capture_output=True,
                            text=True, timeout=1700)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = (result.stdout + result.stderr).splitlines()
    assert f"Preparing the environment {venv} from uv.lock (about a minute; V=1 lists the packages)" in lines
    uv_lines = [line for line in lines if line.lstrip().startswith(("+ ", "Resolved ", "Prepared ", "Installed "))]
    assert not uv_lines, uv_lines[:5]
    version = subprocess.run([str(venv / "bin" / "taxipipe"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("taxipipe")

    # a copy of the checkout whose .venv links to this environment (the docs test's way), synced
    # again: the scripts keep naming the environment's real path, so they outlive the copy
    copy = tmp_path / "checkout"
    copy.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in {".git", ".venv"}:
            (copy / entry.name).symlink_to(entry)
    (copy / ".venv").symlink_to(venv)
    for stamp in venv.glob(".synced-*"):
        stamp.unlink()
    synced = subprocess.run(["make", "env", "COMPILE=0"], cwd=copy, capture_output=True, text=True, timeout=1700)
    assert synced.returncode == 0, synced.stdout[-3000:] + synced.stderr[-3000:]
    shutil.rmtree(copy)
    version = subprocess.run([str(venv / "bin" / "taxipipe"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("taxipipe"), version.stderr
