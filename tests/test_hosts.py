"""A stack across hosts: a server host that listens, two worker hosts that join it, an outsider.

The hosts are network namespaces on one bridge (tests/hosts.py), each with its own hostname and
folders the others cannot see; the addresses exist only inside them. One set of hosts and one
stack (`stack up --listen` on the server host) serve the module; the worker hosts get a copy of
the join file, as an operator would copy it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import wait_for
from tests.hosts import Host, Hosts, unavailable_reason

pytestmark = pytest.mark.slow

SERVER, WORKER_A, WORKER_B, OUTSIDER = "server", "worker-a", "worker-b", "outsider"


@dataclasses.dataclass
class Cluster:
    hosts: Hosts
    join_file: Path

    @property
    def server(self) -> Host:
        return self.hosts[SERVER]

    def status(self) -> str:
        result = self.hosts.taxipipe(self.server, "stack", "status", timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def copy_join_file(self, host: Host, name: str = "join.json", **changes: str) -> Path:
        """The join file in `host`'s folder (the only place that host sees), with `changes`."""
        values = {**json.loads(self.join_file.read_text()), **changes}
        copy = host.folder / name
        copy.write_text(json.dumps(values))
        copy.chmod(0o600)
        return copy

    def join(self, host: Host, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
        return self.hosts.taxipipe(host, "stack", "join", str(path), *flags, timeout=300)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    hosts = Hosts([SERVER, WORKER_A, WORKER_B, OUTSIDER])
    server = hosts[SERVER]
    try:
        result = hosts.taxipipe(server, "stack", "up", "--listen", server.address, timeout=900)
        assert result.returncode == 0, result.stdout + result.stderr[-5000:]
        print(result.stdout)
        join_file = Path(re.search(r"🔑 join file (\S+)", result.stdout).group(1))
        yield Cluster(hosts, join_file)
    finally:
        hosts.taxipipe(server, "stack", "down", timeout=300)
        hosts.close()


def _joined(status: str) -> set[tuple[str, str, str]]:
    """The (host, engine, alive|gone) lines of `stack status`."""
    section = status.split("joined workers:\n", 1)[1] if "joined workers:\n" in status else ""
    return {tuple(line.split()) for line in section.splitlines() if line.strip()}  # type: ignore[misc]


def test_two_worker_hosts_join_and_status_lists_them_by_host_and_engine(cluster: Cluster):
    hosts = cluster.hosts
    joins = {}
    for name in (WORKER_A, WORKER_B):
        host = hosts[name]
        joins[name] = hosts.start(host, [sys.executable, "-m", "taxipipe", "stack", "join",
                                         str(cluster.copy_join_file(host))])
    try:
        expected = {(name, engine, "alive") for name in (WORKER_A, WORKER_B) for engine in ("airflow", "prefect")}
        wait_for(lambda: expected <= _joined(cluster.status()), "both worker hosts listed alive by engine",
                 seconds=300, interval=2)
        stopping = joins.pop(WORKER_A)
        stopping.send_signal(signal.SIGTERM)
        output, errors = stopping.communicate(timeout=120)
        assert stopping.returncode == 0, output + errors
        assert "⏹️  2 workers stopped" in output
        for engine in ("airflow", "prefect"):
            assert re.search(rf"✅ {engine} worker {WORKER_A} started \(pid \d+, log \S+\)", output), output
        assert hosts.pids(hosts[WORKER_A]) == [], "every worker process of the host ended"
        wait_for(lambda: (WORKER_A, "airflow", "gone") in _joined(cluster.status()),
                 "the stopped host's Airflow worker listed as gone", seconds=120, interval=2)
    finally:
        for process in joins.values():
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=120)


OUTSIDER_CHECK = textwrap.dedent("""
    import json, socket, ssl, sys
    import httpx

    address, ports = sys.argv[1], json.loads(sys.argv[2])
    PATHS = ["/", "/api/2.0/mlflow/experiments/search?max_results=1", "/api/v2/dags", "/api/ready",
             "/api/work_pools/taxipipe", "/edge_worker/v1/worker/outsider"]
    answers = {}
    for port in ports:
        seen = []
        for path in PATHS:
            try:
                seen.append(httpx.get(f"http://{address}:{port}{path}", timeout=10).status_code)
            except httpx.ConnectError:
                seen.append("refused")
            except httpx.HTTPError:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                try:
                    with socket.create_connection((address, port), timeout=10) as raw:
                        with context.wrap_socket(raw) as tls:
                            tls.sendall(b"x")
                            tls.recv(1)
                    seen.append("tls accepted")
                except (OSError, ssl.SSLError):
                    seen.append("tls refused")
        answers[port] = seen
    print(json.dumps(answers))
""")


def test_every_port_the_server_opens_on_its_address_refuses_an_outsider(cluster: Cluster):
    hosts, server = cluster.hosts, cluster.server
    listening = hosts.run(server, ["ss", "-ltnH"])
    ports = sorted({int(match.group(2)) for match in re.finditer(r"\s(\S+):(\d+)\s", listening.stdout)
                    if match.group(1) in (server.address, "0.0.0.0", "*", "[::]")})
    assert len(ports) >= 4, f"MLflow, Airflow, Prefect and Dask listen on {server.address}: {listening.stdout}"
    result = hosts.run(hosts[OUTSIDER], [sys.executable, "-c", OUTSIDER_CHECK, server.address, json.dumps(ports)])
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    for port, seen in answers.items():
        # "/" may be a login page; every path that reads or changes data is refused
        assert all(status in (401, 403, 404, 405, "refused", "tls refused") for status in seen[1:]), (port, seen)
        assert any(status in (401, 403, "refused", "tls refused") for status in seen), (port, seen)


def _refused(result: subprocess.CompletedProcess[str], host: Host, sentence: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == f"❌ {sentence}", result.stderr
    assert not (host.home / "join").exists(), "nothing is started or created before every check passes"


def test_a_join_file_of_other_taxipipe_code_is_one_sentence(cluster: Cluster):
    host = cluster.hosts[WORKER_B]
    path = cluster.copy_join_file(host, "other-version.json", taxipipe_version="0.0.1+000000000000")
    result = cluster.join(host, path)
    version = json.loads(cluster.join_file.read_text())["taxipipe_version"]
    _refused(result, host, f"{path} was made by taxipipe 0.0.1+000000000000, this host runs {version}: install "
                           "the server's version of taxipipe here (the same checkout or wheel)")


def test_old_credentials_are_one_sentence(cluster: Cluster):
    host = cluster.hosts[WORKER_B]
    path = cluster.copy_join_file(host, "old.json", mlflow_password="an-old-password")
    result = cluster.join(host, path)
    url = f"http://{cluster.server.address}:5000"
    _refused(result, host, f"MLflow at {url} does not accept the credentials of {path} (HTTP 401): the join "
                           "file's credentials are not accepted (changed since, or another stack's): get a new "
                           "join file")


def test_old_airflow_and_prefect_credentials_are_refused_too(cluster: Cluster):
    host = cluster.hosts[WORKER_B]
    airflow = cluster.copy_join_file(host, "old-airflow.json", airflow_jwt_secret="x" * 64)
    prefect = cluster.copy_join_file(host, "old-prefect.json", prefect_auth_string="taxipipe:old")
    for path, server in ((airflow, "Airflow's API server"), (prefect, "Prefect's server")):
        result = cluster.join(host, path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.startswith(f"❌ {server} at http://{cluster.server.address}:"), result.stderr
        assert "the join file's credentials are not accepted" in result.stderr
        assert not (host.home / "join").exists()


def test_a_join_file_of_another_stack_is_one_sentence(cluster: Cluster):
    host = cluster.hosts[WORKER_B]
    path = cluster.copy_join_file(host, "other-stack.json", stack_id="0ther0")
    result = cluster.join(host, path)
    served = json.loads(cluster.join_file.read_text())["stack_id"]
    _refused(result, host, f"{path} is the join file of stack 0ther0, but the servers at {cluster.server.address} "
                           f"are stack {served}: use the join file that stack's `up --listen` wrote")


def test_an_unreachable_server_is_retried_with_backoff_then_one_sentence(cluster: Cluster):
    host = cluster.hosts[WORKER_B]
    # the outsider's address: a host of the network where nothing listens
    outsider = cluster.hosts[OUTSIDER].address
    path = cluster.copy_join_file(host, "moved.json", mlflow_url=f"http://{outsider}:5000")
    env = {**host.env(), "TAXIPIPE_STACK__JOIN_TIMEOUT_SECONDS": "6"}
    result = cluster.hosts.taxipipe(host, "stack", "join", str(path), timeout=300, env=env)
    _refused(result, host, f"MLflow at http://{outsider}:5000 did not answer within 6 s (3 attempts): is the "
                           "stack up with --listen on that address, and is it reachable from this host?")
    assert f"⏳ MLflow at http://{outsider}:5000 does not answer (attempt 1, next in 1 s)" in result.stdout
    assert f"⏳ MLflow at http://{outsider}:5000 does not answer (attempt 2, next in 2 s)" in result.stdout
