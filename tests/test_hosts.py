"""A stack across hosts: a server host that listens, two worker hosts that join it, an outsider.

The hosts are network namespaces on one bridge (tests/hosts.py), each with its own hostname and
folders the others cannot see; the addresses exist only inside them. One set of hosts and one
stack (`stack up --listen` on the server host) serve the module; the worker hosts get a copy of
the join file, as an operator would copy it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from taxipipe.stack.state import StackPaths
from tests.helpers import RIDE, wait_for
from tests.hosts import Host, Hosts, unavailable_reason

pytestmark = pytest.mark.slow

SERVER, WORKER_A, WORKER_B, OUTSIDER = "server", "worker-a", "worker-b", "outsider"
MIRROR_PORT = 8000
DAG_ID = "taxi_duration_pipeline"

#: One call of Airflow's REST API as the generated admin (argv: method, path, JSON body): its JSON.
AIRFLOW_API = textwrap.dedent("""
    import json, os, sys, httpx
    from pathlib import Path
    base = os.environ["AIRFLOW__EDGE__API_URL"].split("/edge_worker/")[0]
    password = json.loads((Path(os.environ["AIRFLOW_HOME"]) / "passwords.json").read_text())["admin"]
    token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    method, path, body = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    answer = httpx.request(method, f"{base}/api/v2{path}", json=body if method != "GET" else None, timeout=30,
                           headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert answer.status_code < 300, answer.text
    print(answer.text)
""")
DAG_RUNS = f"/dags/{DAG_ID}/dagRuns"

#: The hosts the Airflow runs' steps ran on, their ids, and the champion's run.
MLFLOW_RUNS = textwrap.dedent("""
    import json
    from mlflow import MlflowClient
    client = MlflowClient()
    experiment = client.get_experiment_by_name("airflow-taxi-duration")
    runs = client.search_runs([experiment.experiment_id])
    champion = client.get_model_version_by_alias("nyc-taxi-duration", "champion")
    print(json.dumps({"hosts": sorted({run.data.tags.get("taxipipe.host") for run in runs}),
                      "run_ids": [run.info.run_id for run in runs], "champion_run": champion.run_id}))
""")


def _exports(text: str) -> dict[str, str]:
    """The variables of `export NAME=VALUE` lines."""
    return {key: " ".join(shlex.split(value)) for key, value in re.findall(r"^export (\w+)=(.*)$", text, re.M)}


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

    def on_server(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A Python script on the server host, in a shell pointed at the stack (`stack env`)."""
        exported = self.hosts.taxipipe(self.server, "stack", "env", timeout=120)
        assert exported.returncode == 0, exported.stderr
        env = {**self.server.env(), **_exports(exported.stdout)}
        result = self.hosts.run(self.server, [sys.executable, "-c", script, *args], timeout=300, env=env)
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]
        return result

    def airflow(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return json.loads(self.on_server(AIRFLOW_API, method, path, json.dumps(body or {})).stdout)


def mirror(folder: Path, tlc_dir: Path) -> Path:
    """The TLC months for the outsider host to serve: the real ones, and every month a scheduled
    run may train or validate on this year and next, as real months under their names."""
    folder.mkdir()
    for month in tlc_dir.glob("*.parquet"):
        (folder / month.name).symlink_to(month)
    this_year = datetime.now(timezone.utc).year
    for year in (this_year - 1, this_year, this_year + 1):
        for month in range(1, 13):
            link = folder / f"green_tripdata_{year}-{month:02d}.parquet"
            if not link.exists():
                link.symlink_to(tlc_dir / f"green_tripdata_2021-0{1 + month % 2}.parquet")
    return folder


@pytest.fixture(scope="module")
def cluster(tlc_dir: Path) -> Iterator[Cluster]:
    """The hosts, a TLC mirror on the outsider host, and a stack listening on the server's address."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    hosts = Hosts([SERVER, WORKER_A, WORKER_B, OUTSIDER])
    server, outsider = hosts[SERVER], hosts[OUTSIDER]
    try:
        served = mirror(outsider.folder / "tlc", tlc_dir)
        hosts.start(outsider, [sys.executable, "-m", "http.server", "--bind", outsider.address,
                               "--directory", str(served), str(MIRROR_PORT)])
        # a task whose worker died is failed (then retried) after 30 s without its heartbeat
        env = {**server.env(), "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
               "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
               "TAXIPIPE_DATA__URL_TEMPLATE": f"http://{outsider.address}:{MIRROR_PORT}/"
                                              "{color}_tripdata_{year}-{month:02d}.parquet"}
        result = hosts.taxipipe(server, "stack", "up", "--listen", server.address, timeout=900, env=env)
        assert result.returncode == 0, result.stdout + result.stderr[-5000:]
        join_file = Path(re.search(r"🔑 join file (\S+)", result.stdout).group(1))
        yield Cluster(hosts, join_file)
    finally:
        hosts.taxipipe(server, "stack", "down", timeout=300)
        cluster_folder = StackPaths.of(server.home).postgres  # as root: under user postgres's home
        hosts.close()
        shutil.rmtree(cluster_folder, ignore_errors=True)


@pytest.fixture(scope="module")
def workers(cluster: Cluster) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """`stack join` running on both worker hosts, each with its own copy of the join file."""
    hosts = cluster.hosts
    joins = {name: hosts.start(hosts[name], [sys.executable, "-m", "taxipipe", "stack", "join",
                                            str(cluster.copy_join_file(hosts[name]))])
             for name in (WORKER_A, WORKER_B)}
    try:
        yield joins
    finally:
        for process in joins.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.communicate(timeout=120)


def _joined(status: str) -> set[tuple[str, str, str]]:
    """The (host, engine, alive|gone) lines of `stack status`."""
    section = status.split("joined workers:\n", 1)[1] if "joined workers:\n" in status else ""
    return {tuple(line.split()) for line in section.splitlines() if line.strip()}  # type: ignore[misc]


OUTSIDER_CHECK = textwrap.dedent("""
    import json, socket, ssl, sys
    import httpx

    address, ports = sys.argv[1], json.loads(sys.argv[2])
    # the UI's page first, then calls that read or change data on MLflow, Airflow, Prefect, edge3
    CALLS = [("GET", "/"), ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"), ("GET", "/api/v2/dags"),
             ("POST", "/api/flows/filter"), ("GET", "/api/work_pools/taxipipe"),
             ("POST", "/edge_worker/v1/jobs/fetch/outsider")]
    answers = {}
    for port in ports:
        seen = []
        for method, path in CALLS:
            try:
                seen.append(httpx.request(method, f"http://{address}:{port}{path}", timeout=10).status_code)
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
        # "/" may be a login page (and Prefect's /api/health and /api/ready answer anyone, with no
        # data); every call that reads or changes data is refused (422: edge3 wants its token header)
        assert all(status in (401, 403, 404, 405, 422, "refused", "tls refused") for status in seen[1:]), (port, seen)
        assert any(status in (401, 403, "refused", "tls refused") for status in seen), (port, seen)


def _refused(result: subprocess.CompletedProcess[str], host: Host, sentence: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == f"❌ {sentence}", result.stderr
    assert not (host.home / "join").exists(), "nothing is started or created before every check passes"


def test_a_join_file_of_other_taxipipe_code_is_one_sentence(cluster: Cluster):
    host = cluster.hosts[OUTSIDER]
    path = cluster.copy_join_file(host, "other-version.json", taxipipe_version="0.0.1+000000000000")
    result = cluster.join(host, path)
    version = json.loads(cluster.join_file.read_text())["taxipipe_version"]
    _refused(result, host, f"{path} was made by taxipipe 0.0.1+000000000000, this host runs {version}: install "
                           "the server's version of taxipipe here (the same checkout or wheel)")


def test_old_credentials_are_one_sentence(cluster: Cluster):
    host = cluster.hosts[OUTSIDER]
    path = cluster.copy_join_file(host, "old.json", mlflow_password="an-old-password")
    result = cluster.join(host, path)
    url = f"http://{cluster.server.address}:5000"
    _refused(result, host, f"MLflow at {url} does not accept the credentials of {path} (HTTP 401): the join "
                           "file's credentials are not accepted (changed since, or another stack's): get a new "
                           "join file")


def test_old_airflow_and_prefect_credentials_are_refused_too(cluster: Cluster):
    host = cluster.hosts[OUTSIDER]
    airflow = cluster.copy_join_file(host, "old-airflow.json", airflow_jwt_secret="x" * 64)
    prefect = cluster.copy_join_file(host, "old-prefect.json", prefect_auth_string="taxipipe:old")
    for path, server in ((airflow, "Airflow's API server"), (prefect, "Prefect's server")):
        result = cluster.join(host, path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.startswith(f"❌ {server} at http://{cluster.server.address}:"), result.stderr
        assert "the join file's credentials are not accepted" in result.stderr
        assert not (host.home / "join").exists()


def test_a_join_file_of_another_stack_is_one_sentence(cluster: Cluster):
    host = cluster.hosts[OUTSIDER]
    path = cluster.copy_join_file(host, "other-stack.json", stack_id="0ther0")
    result = cluster.join(host, path)
    served = json.loads(cluster.join_file.read_text())["stack_id"]
    _refused(result, host, f"{path} is the join file of stack 0ther0, but the servers at {cluster.server.address} "
                           f"are stack {served}: use the join file that stack's `up --listen` wrote")


def test_an_unreachable_server_is_retried_with_backoff_then_one_sentence(cluster: Cluster):
    host = cluster.hosts[OUTSIDER]
    # a port of the server host where nothing listens
    url = f"http://{cluster.server.address}:5999"
    path = cluster.copy_join_file(host, "moved.json", mlflow_url=url)
    env = {**host.env(), "TAXIPIPE_STACK__JOIN_TIMEOUT_SECONDS": "6"}
    result = cluster.hosts.taxipipe(host, "stack", "join", str(path), timeout=300, env=env)
    _refused(result, host, f"MLflow at {url} did not answer within 6 s (3 attempts): is the stack up with "
                           "--listen on that address, and is it reachable from this host?")
    assert f"⏳ MLflow at {url} does not answer (attempt 1, next in 1 s)" in result.stdout
    assert f"⏳ MLflow at {url} does not answer (attempt 2, next in 2 s)" in result.stdout


def test_two_worker_hosts_join_and_status_lists_them_by_host_and_engine(cluster: Cluster, workers):
    expected = {(name, engine, "alive") for name in (WORKER_A, WORKER_B) for engine in ("airflow", "prefect")}
    last: list[str] = []

    def listed() -> bool:
        last[:] = [cluster.status()]
        return expected <= _joined(last[0])

    wait_for(listed, "both worker hosts listed alive by engine", seconds=300, interval=2)


def test_an_airflow_run_lands_on_the_worker_hosts_and_registers_a_champion(cluster: Cluster, workers):
    """The scheduled run Airflow starts as soon as the DAG appears (on months the mirror serves
    under the names the schedule asks for) runs its tasks on the edge workers only."""

    def finished() -> str | None:
        runs = cluster.airflow("GET", DAG_RUNS)["dag_runs"]
        states = [run["state"] for run in runs if run["run_type"] == "scheduled"]
        assert "failed" not in states, runs
        return "success" in states and "success"

    wait_for(finished, "the scheduled Airflow run succeeded", seconds=1500, interval=10)
    found = json.loads(cluster.on_server(MLFLOW_RUNS).stdout)
    assert found["hosts"] and set(found["hosts"]) <= {WORKER_A, WORKER_B}, found
    assert found["champion_run"] in found["run_ids"], found
    assert [path for path in (cluster.server.home / "partitions").rglob("*") if path.is_file()] == [], \
        "no intermediate of any run is on the server host"
    artifacts = StackPaths.of(cluster.server.home).artifacts
    left = [path for path in artifacts.rglob("*") if path.is_file() and "intermediates" in path.parts]
    assert left == [], f"cleanup removed every intermediate from the server's artifact store: {left}"


#: The newest run with a `dask_workers` metric, of every experiment: that metric.
DASK_WORKERS_METRIC = textwrap.dedent("""
    import mlflow
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="metrics.dask_workers > 0",
                              order_by=["attributes.start_time DESC"], output_format="list")
    print(int(runs[0].data.metrics["dask_workers"]))
""")


def test_a_joined_host_serves_the_champion_with_stack_env_join(cluster: Cluster, workers):
    """On worker-a, `stack env --join` points `taxipipe serve` at the stack's registry."""
    hosts, host = cluster.hosts, cluster.hosts[WORKER_A]
    exported = hosts.taxipipe(host, "stack", "env", "--join", str(cluster.copy_join_file(host, "env.json")),
                              timeout=300)
    assert exported.returncode == 0, exported.stderr
    env = {**host.env(), **_exports(exported.stdout)}
    assert env["MLFLOW_TRACKING_URI"].startswith(f"http://{cluster.server.address}:"), env
    port = "8590"
    server = hosts.start(host, [sys.executable, "-m", "taxipipe", "serve", "--port", port], env=env)
    ask = textwrap.dedent(f"""
        import httpx, json
        answer = httpx.post("http://127.0.0.1:{port}/predict", json={RIDE!r}, timeout=30)
        print(json.dumps([answer.status_code, answer.json()]))
    """)
    try:
        def answered() -> list | None:
            result = hosts.run(host, [sys.executable, "-c", ask], timeout=120)
            return json.loads(result.stdout) if result.returncode == 0 else None

        status, body = wait_for(answered, "the joined host's server answered /predict", seconds=300, interval=2)
        assert status == 200 and body["duration_minutes"] > 0, body
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=120)


def test_a_dask_run_from_the_server_host_trains_on_both_worker_hosts(cluster: Cluster, workers):
    expected = {(name, "dask", "alive") for name in (WORKER_A, WORKER_B)}
    wait_for(lambda: expected <= _joined(cluster.status()), "both worker hosts' Dask workers listed",
             seconds=300, interval=2)
    hosts, server = cluster.hosts, cluster.server
    exported = hosts.taxipipe(server, "stack", "env", timeout=120)
    assert exported.returncode == 0, exported.stderr
    env = {**server.env(), **_exports(exported.stdout)}
    assert env["TAXIPIPE_COMPUTE__DASK_SCHEDULER"].startswith("tls://"), env
    run = hosts.taxipipe(server, "run", "--engine", "dask", "--year", "2021", "--month", "1", timeout=1200, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert cluster.on_server(DASK_WORKERS_METRIC).stdout.strip() == "2"


PREFECT_RUN = textwrap.dedent("""
    import subprocess, sys
    sys.exit(subprocess.call([sys.executable, "-m", "prefect", "deployment", "run", "ml-pipeline/monthly",
                              "--param", "latest=false", "--param", "year=2021", "--param", "month=1",
                              "--watch", "--watch-timeout", "1200"]))
""")
PREFECT_HOSTS = MLFLOW_RUNS.replace("airflow-taxi-duration", "prefect-taxi-duration")


def test_the_listening_stack_runs_no_prefect_worker_and_a_joined_host_takes_the_run(cluster: Cluster, workers):
    assert "prefect-worker" not in cluster.status(), "the server host runs no task, so no Prefect worker"
    result = cluster.on_server(PREFECT_RUN)
    assert "Completed" in result.stdout, result.stdout
    found = json.loads(cluster.on_server(PREFECT_HOSTS).stdout)
    assert found["hosts"] and set(found["hosts"]) <= {WORKER_A, WORKER_B}, found


def edge_worker(hosts: Hosts, host: Host) -> psutil.Process:
    """The `airflow edge worker` process `stack join` started on `host` (its session's leader)."""
    for pid in hosts.pids(host):
        with contextlib.suppress(psutil.Error, OSError):
            process = psutil.Process(pid)
            # it names itself `airflow edge worker: HOSTNAME` (setproctitle)
            if os.getsid(pid) == pid and "edge worker" in " ".join(process.cmdline()):
                return process
    raise AssertionError(f"no airflow edge worker runs on {host.name}")


def test_a_task_whose_worker_is_killed_is_retried_on_the_other_host(cluster: Cluster, workers):
    from taxipipe.partition import Partition
    from taxipipe.runners.airflow.adapter import logical_date_for

    logical_date = logical_date_for(Partition("green", 2021, 1)).isoformat()
    # a train of many slow rounds that early stopping cannot end sooner, so the kill lands inside it
    slow = {"model": {"params": {"n_estimators": 3000, "learning_rate": 0.001}, "early_stopping_rounds": 3000}}
    run_id = cluster.airflow("POST", DAG_RUNS, {"logical_date": logical_date, "conf": {"settings": slow}})["dag_run_id"]
    instances = f"{DAG_RUNS}/{run_id}/taskInstances"

    def training() -> dict[str, Any] | None:
        train = cluster.airflow("GET", f"{instances}/train")
        return train if train["state"] == "running" and train["hostname"] in workers else None

    killed_on = wait_for(training, "the train task running on a worker host", seconds=900, interval=3)["hostname"]
    edge_worker(cluster.hosts, cluster.hosts[killed_on]).kill()
    output, errors = workers[killed_on].communicate(timeout=120)
    assert workers[killed_on].returncode == 1, output + errors
    assert re.fullmatch(r"❌ the airflow worker exited \(signal 9\); see \S+airflow-worker.log: the other workers "
                        r"are stopped\n", errors), errors
    assert cluster.hosts.pids(cluster.hosts[killed_on]) == [], "the host's other workers are stopped"

    def finished() -> str | None:
        state = cluster.airflow("GET", f"{DAG_RUNS}/{run_id}")["state"]
        assert state != "failed", cluster.airflow("GET", instances)
        return state == "success" and state

    wait_for(finished, "the DAG run succeeded after the worker was killed", seconds=1500, interval=10)
    train = cluster.airflow("GET", f"{instances}/train")
    survivor = ({WORKER_A, WORKER_B} - {killed_on}).pop()
    assert train["try_number"] >= 2 and train["hostname"] == survivor, train


def test_sigterm_stops_a_hosts_workers_and_status_says_it_is_gone(cluster: Cluster, workers):
    hosts = cluster.hosts
    name, stopping = next((name, process) for name, process in workers.items() if process.poll() is None)
    stopping.send_signal(signal.SIGTERM)
    output, errors = stopping.communicate(timeout=120)
    assert stopping.returncode == 0, output + errors
    assert "⏹️  3 workers stopped" in output
    for engine in ("airflow", "prefect", "dask"):
        assert re.search(rf"✅ {engine} worker {name} started \(pid \d+, log \S+\)", output), output
    assert hosts.pids(hosts[name]) == [], "every worker process of the host ended"
    wait_for(lambda: {(name, "airflow", "gone"), (name, "dask", "gone")} <= _joined(cluster.status()),
             "the stopped host's Airflow and Dask workers listed as gone", seconds=120, interval=2)
