"""`taxipipe stack join` on this host alone: what it refuses before reaching or starting anything.

The joins that reach a real listening stack run on hosts made of network namespaces
(tests/test_hosts.py); these need no stack and no root.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from taxipipe.stack import join_file
from taxipipe.stack.join_file import JoinFile, code_version
from tests.helpers import free_port, run_cli


def a_join_file(path: Path, port: int, **changes: str) -> Path:
    """A join file of this code whose servers are all at 127.0.0.1:`port`."""
    base = f"http://127.0.0.1:{port}"
    join = JoinFile(stack_id="abc123", taxipipe_version=code_version(), address="127.0.0.1", mlflow_url=base,
                    mlflow_username="admin", mlflow_password="secret", prefect_api_url=f"{base}/api",
                    prefect_auth_string="taxipipe:secret", prefect_work_pool="taxipipe",
                    airflow_edge_api_url=f"{base}/edge_worker/v1/rpcapi", airflow_jwt_secret="s" * 64,
                    dask_scheduler=f"tls://127.0.0.1:{port}", dask_ca_pem="", dask_cert_pem="", dask_key_pem="")
    join_file.write(path, replace(join, **changes))
    return path


def test_a_server_that_does_not_answer_is_retried_with_backoff_then_one_sentence(tmp_path: Path):
    port = free_port()
    path = a_join_file(tmp_path / "join.json", port)
    home = tmp_path / "home"
    result = run_cli("stack", "join", str(path), env={"TAXIPIPE_HOME": str(home),
                                                       "TAXIPIPE_STACK__JOIN_TIMEOUT_SECONDS": "10"})
    assert result.returncode == 1
    url = f"http://127.0.0.1:{port}"
    retries = [line for line in result.stdout.splitlines() if line.startswith("⏳")]
    # on an idle machine 4 attempts (after 1, 2 and 4 s); a busy one may leave time for fewer
    assert retries[:2] == [f"⏳ MLflow at {url} does not answer (attempt 1, next in 1 s)",
                           f"⏳ MLflow at {url} does not answer (attempt 2, next in 2 s)"], result.stdout
    assert result.stderr.strip() == (f"❌ MLflow at {url} did not answer within 10 s ({len(retries) + 1} attempts): "
                                     "is the stack up with --listen on that address, and is it reachable from "
                                     "this host?")
    assert not (home / "join").exists(), "nothing is created before every check passes"


def test_a_join_file_of_other_code_and_an_engine_without_a_worker_are_one_sentence(tmp_path: Path):
    home = {"TAXIPIPE_HOME": str(tmp_path / "home")}
    other = a_join_file(tmp_path / "other.json", free_port(), taxipipe_version="0.0.1+000000000000")
    result = run_cli("stack", "join", str(other), env=home)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"❌ {other} was made by taxipipe 0.0.1+000000000000, this host runs "
                                     f"{code_version()}: install the server's version of taxipipe here (the same "
                                     "checkout or wheel)")
    path = a_join_file(tmp_path / "join.json", free_port())
    result = run_cli("stack", "join", str(path), "--engines", "airflow,dagster", env=home)
    assert result.returncode == 1
    assert result.stderr.strip() == "❌ no worker for dagster: --engines takes airflow, prefect, dask"
    assert not (tmp_path / "home").exists()


def test_join_takes_a_file_and_the_other_actions_none(tmp_path: Path):
    home = {"TAXIPIPE_HOME": str(tmp_path / "home")}
    result = run_cli("stack", "join", env=home)
    assert (result.returncode, result.stderr.strip()) == (
        1, "❌ `taxipipe stack join` needs the join file: taxipipe stack join FILE")
    result = run_cli("stack", "status", "join.json", env=home)
    assert (result.returncode, result.stderr.strip()) == (
        1, "❌ `taxipipe stack join FILE` takes a join file; up, down, status and env take none")
    result = run_cli("stack", "join", str(tmp_path / "missing.json"), env=home)
    assert result.returncode == 1 and result.stderr.startswith(f"❌ no join file at {tmp_path / 'missing.json'}")


def test_the_schedulers_roster_keeps_every_worker_that_joined(tmp_path: Path, monkeypatch) -> None:
    """`stack status` lists a Dask worker that left as gone: the scheduler's preload kept its name."""
    from distributed import LocalCluster

    from taxipipe.stack import dask_roster

    roster = tmp_path / "dask-workers.json"
    monkeypatch.setenv(dask_roster.ROSTER_ENV, str(roster))
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None,
                      scheduler_kwargs={"preload": [dask_roster.PRELOAD]}) as cluster:
        assert dask_roster.read(roster) == []
        cluster.scale(2)
        cluster.wait_for_workers(2, timeout=120)
        cluster.scale(1)
    assert dask_roster.read(roster) == ["0", "1"]
