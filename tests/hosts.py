"""Hosts on one machine: network namespaces joined by a bridge, each host with a name of its own.

`Hosts` makes a bridge namespace and one namespace per host (veth pairs into the bridge, `lo`
up, an address 10.213.0.N/24 that exists only inside them). A command runs "on a host" in its
network namespace and in new UTS and mount namespaces: its hostname is the host's, and the
other hosts' folders are hidden under an empty tmpfs. Each host has its own HOME, XDG_STATE_HOME
and TAXIPIPE_HOME under its folder. `close` kills every process of every namespace by its pid
(`ip netns pids`), then deletes the namespaces. Needs root (CI runs as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psutil

SUBNET = "10.213.0"


@dataclass(frozen=True)
class Host:
    """One host: its name (hostname), network namespace, address and folder."""

    name: str
    namespace: str
    address: str
    folder: Path

    @property
    def home(self) -> Path:
        return self.folder / "home"

    def env(self) -> dict[str, str]:
        """A login shell of this host: its own homes, no settings of another stack or shell."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("TAXIPIPE_", "AIRFLOW", "PREFECT_", "MLFLOW_"))}
        env.update({"HOME": str(self.folder), "XDG_STATE_HOME": str(self.folder / "state"),
                    "TAXIPIPE_HOME": str(self.home)})
        return env


def unavailable_reason() -> str | None:
    """Why this machine cannot make hosts, or None when it can."""
    if os.geteuid() != 0:
        return "making network namespaces (ip netns) needs root; CI runs the hosts' tests as root"
    for program in ("ip", "unshare", "ss"):
        if shutil.which(program) is None:
            return f"`{program}` is not installed; the hosts' tests need iproute2 and util-linux"
    probe = f"tpprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here ({made.stderr.strip()}); the hosts' tests need network namespaces"
    subprocess.run(["ip", "netns", "del", probe], check=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    """Hosts named `names` (10.213.0.1, .2, ...) on one bridge, in a fresh folder."""

    def __init__(self, names: Sequence[str]) -> None:
        tag = f"tp{os.getpid()}"
        self.base = Path(tempfile.mkdtemp(prefix="taxipipe-hosts-"))
        self.bridge = f"{tag}-bridge"
        self.hosts = {name: Host(name, f"{tag}-{name}", f"{SUBNET}.{number}", self.base / name)
                      for number, name in enumerate(names, start=1)}
        self.namespaces = [self.bridge]
        try:
            _ip("netns", "add", self.bridge)
            _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge, "link", "set", "br0", "up")
            for number, host in enumerate(self.hosts.values(), start=1):
                self.namespaces.append(host.namespace)
                _ip("netns", "add", host.namespace)
                _ip("-n", host.namespace, "link", "set", "lo", "up")
                _ip("-n", host.namespace, "link", "add", "eth0", "type", "veth", "peer", "name", f"port{number}",
                    "netns", self.bridge)
                _ip("-n", self.bridge, "link", "set", f"port{number}", "master", "br0", "up")
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.namespace, "link", "set", "eth0", "up")
                (host.folder / "state").mkdir(parents=True)
        except BaseException:
            self.close()
            raise

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def command(self, host: Host, args: Sequence[str]) -> list[str]:
        """`args` as run on `host`: its network, its hostname, the other hosts' folders hidden."""
        hidden = " ".join(f"'{other.folder}'" for other in self.hosts.values() if other is not host)
        script = f'hostname "$0" && for folder in {hidden}; do mount -t tmpfs tmpfs "$folder"; done && exec "$@"'
        return ["ip", "netns", "exec", host.namespace, "unshare", "--uts", "--mount", "--propagation", "private",
                "sh", "-c", script, host.name, *args]

    def run(self, host: Host, args: Sequence[str], timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(host, args), env=env or host.env(), capture_output=True, text=True,
                              timeout=timeout)

    def start(self, host: Host, args: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """`args` on `host` in the background, its output in pipes (it is the process itself:
        `ip netns exec`, `unshare` and `sh` each exec the next)."""
        return subprocess.Popen(self.command(host, args), env=env or host.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def taxipipe(self, host: Host, *args: str, timeout: float = 600,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(host, [sys.executable, "-m", "taxipipe", *args], timeout, env)

    def pids(self, host: Host) -> list[int]:
        return self._pids(host.namespace)

    @staticmethod
    def _pids(namespace: str) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
        return [int(pid) for pid in listed.stdout.split()]

    def close(self) -> None:
        """Kill every process of every namespace by its pid, delete the namespaces and the folder."""
        for namespace in self.namespaces:
            for pid in self._pids(namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for namespace in self.namespaces:
            left = []
            for pid in self._pids(namespace):
                with contextlib.suppress(psutil.NoSuchProcess):
                    left.append(psutil.Process(pid))
            psutil.wait_procs(left, timeout=30)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
