"""`taxipipe stack up --listen ADDRESS`: the servers a worker reaches listen on ADDRESS and demand
credentials, the rest stays on 127.0.0.1, and the join file carries what a worker needs.

One listening stack serves the slow tests, on 127.0.0.2 (a loopback address Linux answers
without set-up, so what listens there and what stays on 127.0.0.1 can be told apart) and on
ports of its own beside tests/test_stack.py's. The last test stops it, refuses then makes new
credentials, and stops it for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from taxipipe.stack import certificates, join_file
from taxipipe.stack.certificates import TlsFiles
from taxipipe.stack.dask_scheduler import answers
from tests.helpers import REPO, free_port, wait_for
from tests.test_stack import RunningStack, alive, stack_env

ADDRESS = "127.0.0.2"
TEMPLATE = "http://127.0.0.1:9/{color}_tripdata_{year}-{month:02d}.parquet"


@dataclass
class ListeningStack(RunningStack):
    #: what `up --listen` printed
    output: str = ""


@pytest.fixture(scope="module")
def listening() -> Iterator[ListeningStack]:
    """A stack whose workers' servers listen on ADDRESS, in a fresh home on free ports."""
    base = Path(tempfile.mkdtemp(prefix="taxipipe-listen-"))  # 0700: user postgres cannot enter it
    env = {**stack_env(base / "home"), "TAXIPIPE_STACK__DASK_PORT": str(free_port()),
           "TAXIPIPE_DATA__URL_TEMPLATE": TEMPLATE}
    ports = {name: int(env[f"TAXIPIPE_STACK__{name.upper()}_PORT"])
             for name in ("postgres", "mlflow", "airflow", "prefect", "dagster", "dask")}
    running = ListeningStack(base / "home", env, ports)
    try:
        running.output = running.up("--listen", ADDRESS)
        yield running
    finally:
        running.remove(base)


def url(stack: RunningStack, name: str) -> str:
    return f"http://{ADDRESS}:{stack.ports[name]}"


def the_join_file(stack: RunningStack) -> Path:
    (path,) = stack.paths.root.glob("join-*.json")
    return path


def tls_from(join: join_file.JoinFile, folder: Path) -> TlsFiles:
    """The join file's certificates as a worker host would keep them."""
    files = TlsFiles(folder)
    folder.mkdir(exist_ok=True)
    for path, text in ((files.ca, join.dask_ca_pem), (files.client_cert, join.dask_cert_pem),
                       (files.client_key, join.dask_key_pem)):
        path.write_text(text)
    return files


def stop_session(process: subprocess.Popen[bytes]) -> None:
    """End a worker this test started in a session of its own: it and every process it forked."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def mlflow_search(stack: RunningStack, auth: tuple[str, str] | None = None) -> int:
    return httpx.get(f"{url(stack, 'mlflow')}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                     auth=auth, timeout=30).status_code


def airflow_token(stack: RunningStack) -> str:
    password = json.loads((stack.paths.engine_home("airflow") / "passwords.json").read_text())["admin"]
    answer = httpx.post(f"{url(stack, 'airflow')}/auth/token", json={"username": "admin", "password": password},
                        timeout=30)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["access_token"]


def tls_without_certificate(stack: RunningStack, ca: Path) -> str:
    """What a TLS client that trusts the stack's CA but presents no certificate gets."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    try:
        with socket.create_connection((ADDRESS, stack.ports["dask"]), timeout=10) as raw:
            with context.wrap_socket(raw) as connection:
                connection.sendall(b"\0" * 16)
                return f"answered {connection.recv(16)!r}"
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {exc}"


def plain_tcp_identity(stack: RunningStack) -> str:
    """What a Dask client over plain TCP gets."""
    from distributed.comm import connect

    async def identity() -> object:
        comm = await connect(f"tcp://{ADDRESS}:{stack.ports['dask']}", timeout=10)
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()

    try:
        return f"answered {asyncio.run(identity())!r}"
    except OSError as exc:
        return f"refused: {exc}"


# --- without servers ---------------------------------------------------------------------


def test_an_address_not_of_this_host_is_refused_before_anything_starts(tmp_path: Path):
    env = stack_env(tmp_path / "home")
    result = subprocess.run([sys.executable, "-m", "taxipipe", "stack", "up", "--listen", "192.0.2.1"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == ("❌ 192.0.2.1 is not an address of this host: give stack.listen (--listen) "
                                     "one of its addresses, the one worker hosts reach")
    assert not (tmp_path / "home" / "stack").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["up", "--listen", "10.0.0"], "❌ invalid configuration: stack.listen '10.0.0' is not an IP address: give "
                                   "one of this host's, such as 10.0.0.5 (the address workers on other hosts "
                                   "reach), or leave it empty"),
    (["env", "--listen", "10.0.0.5"], "❌ --listen and --new-credentials go with `taxipipe stack up`, not `env`"),
])
def test_bad_listen_flags_are_one_sentence(tmp_path: Path, args: list[str], message: str):
    result = subprocess.run([sys.executable, "-m", "taxipipe", "stack", *args], capture_output=True, text=True,
                            env=stack_env(tmp_path / "home"), timeout=120)
    assert (result.returncode, result.stderr.strip()) == (1, message)


def test_certificates_name_the_address_and_are_private(tmp_path: Path):
    files = certificates.make(tmp_path / "tls", "10.213.0.1")
    assert certificates.scheduler_address(files) == "10.213.0.1"
    assert stat.S_IMODE(files.client_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.scheduler_key.stat().st_mode) == 0o600
    ca = files.ca.read_bytes()
    assert certificates.make(tmp_path / "tls", "10.213.0.1").ca.read_bytes() == ca, "kept while complete"
    assert certificates.make(tmp_path / "tls", "10.213.0.2").ca.read_bytes() != ca, "a new address, new files"


# --- the listening stack, in order -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_only_the_servers_workers_reach_listen_on_the_address(listening: RunningStack):
    found = listening.listening()
    outside = {port for ip, port in found if ip != "127.0.0.1"}
    assert {ip for ip, _ in found} == {"127.0.0.1", ADDRESS}, found
    assert outside == {listening.ports[name] for name in ("mlflow", "airflow", "prefect", "dask")}, found
    assert ("127.0.0.1", listening.ports["postgres"]) in found and ("127.0.0.1", listening.ports["dagster"]) in found


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_every_listening_server_refuses_a_client_without_credentials(listening: RunningStack):
    assert mlflow_search(listening) == 401
    assert httpx.get(f"{url(listening, 'mlflow')}/api/2.0/mlflow-artifacts/artifacts", timeout=30).status_code == 401
    assert httpx.post(f"{url(listening, 'prefect')}/api/flows/filter", json={}, timeout=30).status_code == 401
    assert httpx.get(f"{url(listening, 'airflow')}/api/v2/dags", timeout=30).status_code in (401, 403)
    assert tls_without_certificate(listening, listening.paths.tls / "ca.pem").startswith("refused"), "no client cert"
    assert plain_tcp_identity(listening).startswith("refused")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_join_file_is_private_names_the_stack_and_its_credentials_work(listening: ListeningStack,
                                                                          tmp_path: Path):
    path = the_join_file(listening)
    join = join_file.read(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.name == join.name() == f"join-{listening.secrets()['stack_id']}.json"
    assert f"🔑 join file {path} " in listening.output
    assert join.taxipipe_version == join_file.code_version() and join.address == ADDRESS
    assert [name for name, value in vars(join).items() if not value] == []
    assert join.runner_env == {"TAXIPIPE_DATA__URL_TEMPLATE": TEMPLATE}
    assert (join.mlflow_url, join.prefect_api_url, join.dask_scheduler) == (
        url(listening, "mlflow"), f"{url(listening, 'prefect')}/api", f"tls://{ADDRESS}:{listening.ports['dask']}")
    assert join.prefect_work_pool == "taxipipe"

    assert mlflow_search(listening, (join.mlflow_username, join.mlflow_password)) == 200
    assert mlflow_search(listening, (join.mlflow_username, "not-the-password")) == 401
    user, _, password = join.prefect_auth_string.partition(":")
    assert httpx.post(f"{join.prefect_api_url}/flows/filter", json={}, auth=(user, password),
                      timeout=30).status_code == 200
    dags = httpx.get(f"{url(listening, 'airflow')}/api/v2/dags", timeout=30,
                     headers={"Authorization": f"Bearer {airflow_token(listening)}"})
    assert dags.status_code == 200 and dags.json()["total_entries"] >= 1
    assert answers(join.dask_scheduler, tls_from(join, tmp_path / "tls"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_an_edge_worker_with_the_join_files_secret_registers(listening: RunningStack, tmp_path: Path):
    """A worker with only the join file's edge URL and secret registers; one with another secret is
    refused. Its queue is one no task uses, so it takes none of the stack's scheduled runs."""
    join = join_file.read(the_join_file(listening))
    token = airflow_token(listening)

    def worker(name: str, secret: str) -> subprocess.Popen[bytes]:
        env = {**{k: v for k, v in listening.env.items() if not k.startswith("TAXIPIPE_")},
               "AIRFLOW_HOME": str(tmp_path / name), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__EDGE__API_URL": join.airflow_edge_api_url,
               "AIRFLOW__API_AUTH__JWT_SECRET": secret}
        return subprocess.Popen([sys.executable, "-m", "airflow", "edge", "worker", "-c", "1", "-H", name,
                                 "-q", "no-task-uses-this-queue"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def registered(name: str) -> bool:
        answer = httpx.get(f"{url(listening, 'airflow')}/edge_worker/ui/worker", timeout=30,
                           headers={"Authorization": f"Bearer {token}"})
        return answer.status_code == 200 and name in {item["worker_name"] for item in answer.json()["workers"]}

    joined, stranger = worker("joined", join.airflow_jwt_secret), worker("stranger", "x" * 64)
    try:
        wait_for(lambda: registered("joined"), "the worker with the join file's secret registered", 180)
        assert wait_for(lambda: stranger.poll() is not None, "the worker with another secret ended", 180) != 0
        assert not registered("stranger")
    finally:
        stop_session(joined)
        stop_session(stranger)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_dask_worker_from_the_join_file_computes_for_a_client_of_stack_env(listening: RunningStack,
                                                                            tmp_path: Path):
    """The joining host's worker (`stack/dask_worker.py`) and a client with `stack env`'s
    settings (`compute.dask_tls_dir`) meet at the stack's scheduler, over mutual TLS both ways."""
    from taxipipe.stack.dask_worker import worker_command

    command, env = worker_command(join_file.read(the_join_file(listening)), tmp_path / "worker-home", "joined", 1)
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    script = ("from taxipipe.config import load_settings\n"
              "from taxipipe.compute.dask import connect\n"
              "with connect(load_settings()) as client:\n"
              "    client.wait_for_workers(1, timeout=120)\n"
              "    print(sorted(info['name'] for info in client.scheduler_info()['workers'].values()),\n"
              "          client.submit(sum, [1, 2, 3]).result())\n")
    try:
        result = subprocess.run([sys.executable, "-c", script], env=listening.user_env(), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split("\n")[-2] == "['joined'] 6"
    finally:
        stop_session(worker)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_stack_env_exports_each_clients_credentials(listening: RunningStack):
    env = listening.user_env()
    secrets = listening.secrets()
    assert (env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
        url(listening, "mlflow"), "admin", secrets["mlflow_admin"])
    assert (env["PREFECT_API_URL"], env["PREFECT_API_AUTH_STRING"]) == (f"{url(listening, 'prefect')}/api",
                                                                       secrets["prefect_auth"])
    assert env["TAXIPIPE_COMPUTE__DASK_SCHEDULER"] == f"tls://{ADDRESS}:{listening.ports['dask']}"
    assert env["TAXIPIPE_COMPUTE__DASK_TLS_DIR"] == str(listening.paths.tls)
    assert env["AIRFLOW__EDGE__API_URL"] == f"{url(listening, 'airflow')}/edge_worker/v1/rpcapi"
    # an MLflow client in that shell logs a run and moves a file through the artifact proxy
    script = ("import mlflow, pathlib, tempfile\n"
              "mlflow.set_experiment('listen-check')\n"
              "with mlflow.start_run() as run:\n"
              "    mlflow.log_metric('m', 1.0)\n"
              "    folder = pathlib.Path(tempfile.mkdtemp())\n"
              "    (folder / 'note.txt').write_text('through the proxy')\n"
              "    mlflow.log_artifact(str(folder / 'note.txt'))\n"
              "back = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path='note.txt')\n"
              "print(pathlib.Path(back).read_text())\n")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "through the proxy", result.stderr[-3000:]
    shell = listening.cli("status", timeout=120)
    assert shell.returncode == 0 and "dask-scheduler" in shell.stdout, shell.stdout + shell.stderr


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_new_credentials_and_another_address_wait_for_a_stopped_stack(listening: RunningStack, tmp_path: Path):
    old = join_file.read(the_join_file(listening))
    refused = listening.cli("up", "--listen", ADDRESS, "--new-credentials", timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("❌ --new-credentials needs a stopped stack")
    moved = listening.cli("up", timeout=120)
    assert (moved.returncode, moved.stderr.strip()) == (
        1, f"❌ the running stack listens on {ADDRESS}: `taxipipe stack down` first to change --listen")
    processes = listening.processes()
    assert listening.cli("down", timeout=300).returncode == 0
    assert not [process for process in processes if alive(process)]

    started = time.monotonic()
    again = listening.cli("up", "--listen", ADDRESS, "--new-credentials")
    assert again.returncode == 0, again.stdout + again.stderr[-5000:]
    listening.timings["up with new credentials"] = time.monotonic() - started
    new = join_file.read(the_join_file(listening))
    assert new.stack_id == old.stack_id and "🔑 new credentials" in again.stdout
    assert mlflow_search(listening, (old.mlflow_username, old.mlflow_password)) == 401
    assert mlflow_search(listening, (new.mlflow_username, new.mlflow_password)) == 200
    user, _, password = old.prefect_auth_string.partition(":")
    assert httpx.post(f"{new.prefect_api_url}/flows/filter", json={}, auth=(user, password),
                      timeout=30).status_code == 401
    assert not answers(new.dask_scheduler, tls_from(old, tmp_path / "old"), timeout=5)
    assert answers(new.dask_scheduler, tls_from(new, tmp_path / "new"))
    assert new.airflow_jwt_secret != old.airflow_jwt_secret
