"""Training on Dask workers of other hosts: a TLS scheduler and two TLS workers, each in a home
of its own and a mount namespace where the run's home is an empty folder (no shared disk)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from taxipipe.config import load_settings
from taxipipe.errors import ComputeError
from taxipipe.runners.simple import SimplePipeline
from taxipipe.stack import certificates
from taxipipe.stack.certificates import TlsFiles
from taxipipe.stack.dask_worker import worker_command, worker_home
from taxipipe.stack.join_file import JoinFile
from tests.helpers import cli_data_flags, final_run_id, free_port, run_cli, stop_processes, store_uri

WINDOW_2023 = {"year": 2023, "month": 3, "train_months": 3}
HOSTS = ("host-a", "host-b")


@dataclass(frozen=True)
class TlsCluster:
    address: str
    tls: TlsFiles
    #: where the runs keep their homes: an empty folder on the worker hosts
    client_root: Path
    worker_homes: tuple[Path, ...]
    worker_pids: tuple[int, ...]


def a_join_file(tls: TlsFiles, scheduler: str) -> JoinFile:
    """A join file whose Dask part is the stack's; its other servers are not used here."""
    unused = {name: "" for name in ("stack_id", "taxipipe_version", "address", "mlflow_url", "mlflow_username",
                                    "mlflow_password", "prefect_api_url", "prefect_auth_string", "prefect_work_pool",
                                    "airflow_edge_api_url", "airflow_jwt_secret")}
    return JoinFile(**unused, dask_scheduler=scheduler, dask_ca_pem=tls.ca.read_text(),
                    dask_cert_pem=tls.client_cert.read_text(), dask_key_pem=tls.client_key.read_text())


def client_security(tls: TlsFiles):
    from distributed import Security

    return Security(tls_ca_file=str(tls.ca), tls_client_cert=str(tls.client_cert),
                    tls_client_key=str(tls.client_key), require_encryption=True)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    """The stack's scheduler command on 127.0.0.1 and two workers from `worker_command`, each
    started in a mount namespace of its own with an empty tmpfs over the runs' folder."""
    from distributed import Client

    if os.geteuid() != 0:
        pytest.skip("hiding the run's home from the Dask workers (`unshare --mount`) needs root; CI runs as root")
    work = tmp_path_factory.mktemp("tls-cluster")
    client_root = tmp_path_factory.mktemp("client")
    tls = certificates.make(work / "stack-tls", "127.0.0.1")
    address = f"tls://127.0.0.1:{free_port()}"
    log = open(work / "cluster.log", "w")
    processes = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1",
         "--port", address.rsplit(":", 1)[1], "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
         "--tls-ca-file", str(tls.ca), "--tls-cert", str(tls.scheduler_cert), "--tls-key", str(tls.scheduler_key)],
        stdout=log, stderr=subprocess.STDOUT, cwd=work)]
    homes = tuple(work / host for host in HOSTS)
    try:
        for host, home in zip(HOSTS, homes):
            command, env = worker_command(a_join_file(tls, address), home, hostname=host, nthreads=1)
            hide = f'mount -t tmpfs tmpfs "{client_root}" && exec "$@"'
            processes.append(subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", hide,
                                               "sh", *command], env=env, stdout=log, stderr=subprocess.STDOUT,
                                              cwd=worker_home(home)))
        with Client(address, security=client_security(tls), timeout="60s") as client:
            client.wait_for_workers(2, timeout=180)
        yield TlsCluster(address, tls, client_root, homes, tuple(process.pid for process in processes[1:]))
    finally:
        stop_processes(processes)
        log.close()


def tls_settings(address: str, tls_dir: Path | None):
    compute = {"engine": "dask", "dask_scheduler": address, **({"dask_tls_dir": tls_dir} if tls_dir else {})}
    return load_settings(overrides={"compute": compute})


@pytest.mark.slow
def test_workers_listen_with_tls_only_and_keep_their_files_in_their_homes(tls_cluster: TlsCluster) -> None:
    import psutil
    from distributed import Client

    with Client(tls_cluster.address, security=client_security(tls_cluster.tls), timeout="60s") as client:
        workers = client.scheduler_info()["workers"]
        directories = client.run(os.getcwd)
    assert sorted(info["name"] for info in workers.values()) == list(HOSTS)
    addresses = [*workers, *(info["nanny"] for info in workers.values())]
    assert all(address.startswith("tls://") for address in addresses), addresses
    served = {int(address.rsplit(":", 1)[1]) for address in addresses}
    for pid in tls_cluster.worker_pids:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        listening = {(connection.laddr.ip, connection.laddr.port) for process in tree
                     for connection in process.net_connections("tcp") if connection.status == psutil.CONN_LISTEN}
        assert listening and all(ip == "127.0.0.1" or port in served for ip, port in listening), listening
    homes = {str(home.resolve()) for home in tls_cluster.worker_homes}
    assert all(any(directory.startswith(home) for home in homes) for directory in directories.values()), directories


@pytest.mark.slow
def test_a_window_trains_on_tls_workers_that_cannot_see_the_runs_home(
        make_settings, tlc_server, tls_cluster: TlsCluster) -> None:
    from distributed import Client
    from mlflow import MlflowClient

    local = SimplePipeline(make_settings(data=WINDOW_2023)).run()["train"]
    home = tls_cluster.client_root / "home"

    result = run_cli("run", *cli_data_flags(home, tlc_server, 2023, 3), "--train-months", "3", "--engine", "dask",
                     "--scheduler", tls_cluster.address,
                     env={"TAXIPIPE_COMPUTE__DASK_TLS_DIR": str(tls_cluster.tls.directory)})
    assert result.returncode == 0, result.stdout + result.stderr
    run = MlflowClient(store_uri(home)).get_run(final_run_id(result.stdout))
    assert run.data.params["compute"] == "dask" and run.data.metrics["dask_workers"] == 2
    assert run.data.metrics["rmse"] == local["rmse"], "the window sent over TLS trains the booster a local run does"
    with Client(tls_cluster.address, security=client_security(tls_cluster.tls), timeout="60s") as client:
        seen = client.run(os.listdir, str(tls_cluster.client_root))
    assert home.is_dir() and seen == {address: [] for address in seen} and len(seen) == 2, seen


def test_the_worker_command_keeps_the_certificates_private_and_listens_with_tls(tmp_path: Path) -> None:
    import stat

    tls = certificates.make(tmp_path / "stack-tls", "10.213.0.1")
    join = a_join_file(tls, "tls://10.213.0.1:8786")
    command, env = worker_command(join, tmp_path / "home", hostname="host-a", nthreads=3)

    folder = worker_home(tmp_path / "home")
    for name, source in (("ca.pem", tls.ca), ("client.pem", tls.client_cert), ("client-key.pem", tls.client_key)):
        written = folder / "tls" / name
        assert written.read_text() == source.read_text() and stat.S_IMODE(written.stat().st_mode) == 0o600
        assert str(written) in command
    flags = dict(zip(command, command[1:]))
    assert command[command.index("distributed.cli.dask_worker") + 1] == "tls://10.213.0.1:8786"
    assert (flags["--name"], flags["--nthreads"], flags["--protocol"]) == ("host-a", "3", "tls")
    assert "--no-dashboard" in command and flags["--dashboard-address"].startswith("127.0.0.1:")
    assert flags["--local-directory"] == str(folder / "work") and (folder / "work").is_dir()
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"


def test_a_tls_scheduler_without_the_certificates_is_one_sentence(tmp_path: Path) -> None:
    from taxipipe.compute.dask import connect

    address = f"tls://127.0.0.1:{free_port()}"
    with pytest.raises(ComputeError, match=f"the Dask scheduler {address} speaks TLS: set compute.dask_tls_dir"):
        with connect(tls_settings(address, None)):
            pass
    tls = certificates.make(tmp_path / "tls", "127.0.0.1")
    tls.client_key.unlink()
    with pytest.raises(ComputeError, match=r"compute.dask_tls_dir \(.*\) lacks client-key.pem"):
        with connect(tls_settings(address, tls.directory)):
            pass
    tls.client_key.write_text("not a key")
    with pytest.raises(ComputeError, match=r"the certificates in compute.dask_tls_dir \(.*\) cannot be read"):
        with connect(tls_settings(address, tls.directory)):
            pass


def test_a_tls_scheduler_without_the_certificates_is_refused_before_any_download(home: Path, tlc_server) -> None:
    address = f"tls://127.0.0.1:{free_port()}"
    asked = len(tlc_server.requests)
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--engine", "dask", "--scheduler", address)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert f"the Dask scheduler {address} speaks TLS: set compute.dask_tls_dir" in result.stdout + result.stderr
    assert len(tlc_server.requests) == asked


@pytest.mark.slow
def test_another_stacks_certificates_are_refused_in_one_sentence(tmp_path: Path, tls_cluster: TlsCluster) -> None:
    from taxipipe.compute.dask import connect

    other = certificates.make(tmp_path / "other", "127.0.0.1")
    with pytest.raises(ComputeError, match=f"the Dask scheduler at {tls_cluster.address} refused the TLS handshake"):
        with connect(tls_settings(tls_cluster.address, other.directory)):
            pass


@pytest.mark.slow
def test_a_plain_tcp_client_of_the_tls_scheduler_is_one_sentence(tls_cluster: TlsCluster) -> None:
    from taxipipe.compute.dask import connect

    plain = tls_cluster.address.replace("tls://", "tcp://")
    with pytest.raises(ComputeError, match=f"the Dask scheduler at {plain} closed the connection: if it speaks TLS"):
        with connect(tls_settings(plain, None)):
            pass
