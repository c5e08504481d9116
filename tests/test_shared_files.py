"""Steps on two hosts that share no disk: files go through a real MLflow server's artifact proxy.

Two homes stand for two hosts; the steps of one run alternate between them against one
`mlflow server --serve-artifacts`, so each step reads files the other host wrote.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from taxipipe.config import Settings, load_settings
from taxipipe.errors import SharedFileError, TrackingError
from taxipipe.pipeline import graph, run_step
from taxipipe.steps import Record, StepContext
from taxipipe.tracking import server_command, server_env, shared_files
from tests.helpers import TlcServer, free_port, run_cli, stop, store_uri, wait_healthy

WORKDIR = "partitions/green/2021-01"
#: The run key of the module's run.
RUN = "run-a"


def settings_of(home: Path, tlc_server: TlcServer, tracking_uri: str | None = None) -> Settings:
    tables: dict = {"home": str(home), "data": {"year": 2021, "month": 1, "url_template": tlc_server.url_template}}
    if tracking_uri:
        tables["mlflow"] = {"tracking_uri": tracking_uri}
    return load_settings(overrides=tables)


def files_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


@contextlib.contextmanager
def mlflow_server(root: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`mlflow server --serve-artifacts` as `taxipipe` starts it, proxying to `root`/artifacts, on a
    free port; yields its URL, then stops it by its pid."""
    port = free_port()
    environment = {**os.environ, **server_env(store_uri(root, "mlflow.db"), quiet=True), **(env or {})}
    with (root / "server.log").open("w") as log:
        process = subprocess.Popen([*server_command(port, str(root / "artifacts"), quiet=True), *options],
                                   env=environment, cwd=root, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process)
            yield url
        finally:
            stop(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One tracking server for the module: its URL and the folder its artifact proxy writes to."""
    root = tmp_path_factory.mktemp("tracking")
    with mlflow_server(root) as url:
        yield url, root / "artifacts"


@pytest.fixture(scope="module")
def two_hosts(server: tuple[str, Path], tlc_server: TlcServer,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Settings], dict[str, Record], dict[str, str]]:
    """The run's nodes up to deploy: the downloads on host A, then each node on the other host than
    the one before it, as one run (`RUN`). Returns the settings of each host, the records by node,
    and where each ran."""
    root = tmp_path_factory.mktemp("hosts")
    hosts = {name: settings_of(root / name, tlc_server, server[0]) for name in ("A", "B")}
    records: dict[str, Record] = {}
    ran_on: dict[str, str] = {}
    nodes = [node for node in graph(hosts["A"]) if node.name != "cleanup"]
    for index, node in enumerate(nodes):
        host = "A" if node.per_month else "AB"[(index - len(hosts["A"].months) + 1) % 2]
        records[node.name] = run_step(node, StepContext(hosts[host], run_key=RUN),
                                      {name: records[name] for name in node.upstream})
        ran_on[node.name] = host
    return hosts, records, ran_on


@pytest.mark.slow
def test_steps_on_two_hosts_train_the_same_model(two_hosts, simple_rmse: float) -> None:
    hosts, records, ran_on = two_hosts
    assert records["train"]["rmse"] == pytest.approx(simple_rmse, abs=1e-9)
    assert records["deploy"]["champion"] is True
    # each host fetched what the other wrote, and downloaded the months itself
    assert [ran_on[node] for node in ("extract[2021-02]", "validate_data", "transform", "features", "train")] == [
        "A", "B", "A", "B", "A"]
    assert set(records["validate_data"]["transfers"]["downloaded"]) == {
        "downloads/green_tripdata_2021-01.parquet", "downloads/green_tripdata_2021-02.parquet"}
    assert set(records["features"]["transfers"]["fetched"]) == {
        f"{WORKDIR}/train_clean.parquet", f"{WORKDIR}/validation_clean.parquet"}
    assert set(records["train"]["transfers"]["fetched"]) == {
        f"{WORKDIR}/encoder.json", f"{WORKDIR}/train_features.bin", f"{WORKDIR}/validation_features.bin"}
    assert records["train"]["transfers"]["uploaded"].keys() == {f"{WORKDIR}/model.bin"}
    # the last record names every shared file with its digest, and each is what the writer holds
    shared = records["deploy"]["shared_files"]
    writer = hosts[ran_on["train"]]
    model = writer.home / WORKDIR / "model.bin"
    assert shared[f"{WORKDIR}/model.bin"]["bytes"] == model.stat().st_size
    assert len(shared) == 7 and not any(name.startswith("downloads/") for name in shared)


@pytest.mark.slow
def test_a_tampered_file_in_the_store_is_refused(two_hosts, server, tlc_server: TlcServer, tmp_path: Path) -> None:
    hosts, records, ran_on = two_hosts
    url, _ = server
    name = f"{WORKDIR}/model.bin"
    answer = httpx.put(f"{url}/api/2.0/mlflow-artifacts/artifacts/{shared_files.remote_path(RUN, name)}",
                       content=b"not the model", timeout=60)
    assert answer.status_code == 200, answer.text
    third = settings_of(tmp_path / "C", tlc_server, url)
    # a stale encoder of the same size in the third host's home is replaced by the run's
    encoder = third.home / WORKDIR / "encoder.json"
    encoder.parent.mkdir(parents=True)
    encoder.write_bytes(b"x" * records["features"]["shared_files"][f"{WORKDIR}/encoder.json"]["bytes"])
    save = next(node for node in graph(third) if node.name == "save")
    with pytest.raises(SharedFileError) as refused:
        run_step(save, StepContext(third, run_key=RUN),
                 {"train": records["train"], "validate_model": records["validate_model"]})
    message = str(refused.value)
    assert "\n" not in message and f"intermediates/{RUN}/{name}" in message and "13 bytes" in message, message
    assert not (third.home / name).exists()
    assert encoder.read_bytes() == (hosts[ran_on["features"]].home / WORKDIR / "encoder.json").read_bytes()


@pytest.mark.slow
def test_cleanup_deletes_its_runs_files_and_leaves_another_runs(two_hosts, server) -> None:
    hosts, records, _ = two_hosts
    url, artifacts = server
    assert f"{RUN}/{WORKDIR}/model.bin" in files_under(artifacts / shared_files.PREFIX)
    # another run of the same window, on another host, whose files must outlive this run's cleanup
    other = hosts["B"].home / "other"
    encoder = other / WORKDIR / "encoder.json"
    encoder.parent.mkdir(parents=True)
    encoder.write_text('{"mode": "categorical"}')
    kept = shared_files.upload(url, other, [encoder], "run-b")
    cleanup = next(node for node in graph(hosts["A"]) if node.name == "cleanup")
    record = run_step(cleanup, StepContext(hosts["A"], run_key=RUN), {"deploy": records["deploy"]})
    assert record["removed_remote"] == [f"intermediates/{RUN}"]
    assert files_under(artifacts / shared_files.PREFIX) == {f"run-b/{WORKDIR}/encoder.json"}
    # the run's model stays in the store
    assert any(name.endswith("MLmodel") for name in files_under(artifacts))
    # a host that comes later finds no intermediate of the run, and says so; the other run's file is whole
    late = hosts["B"].home / "late"
    with pytest.raises(SharedFileError, match=rf"^intermediates/{RUN}/{WORKDIR}/model.bin is not in the tracking "
                                              r"server's artifact store at \S+; run the pipeline again"):
        shared_files.fetch(url, late / WORKDIR / "model.bin", records["deploy"]["shared_files"][f"{WORKDIR}/model.bin"])
    assert shared_files.fetch(url, late / WORKDIR / "encoder.json", kept[f"{WORKDIR}/encoder.json"])


@pytest.mark.slow
def test_a_cleanup_deletes_the_files_of_earlier_runs_it_reused(server, tmp_path: Path) -> None:
    """A run that reused a cached record (make, Prefect's cache) reused that run's files too."""
    url, artifacts = server
    written = tmp_path / "A" / WORKDIR / "train_clean.parquet"
    written.parent.mkdir(parents=True)
    written.write_bytes(b"rides")
    reused = shared_files.upload(url, tmp_path / "A", [written], "earlier")
    assert shared_files.remove(url, reused, "later") == ["intermediates/later",
                                                           f"intermediates/earlier/{WORKDIR}/train_clean.parquet"]
    assert not any(name.startswith(("earlier/", "later/")) for name in files_under(artifacts / shared_files.PREFIX))


def test_an_embedded_run_shares_nothing(tlc_server: TlcServer, tmp_path: Path) -> None:
    settings = settings_of(tmp_path / "home", tlc_server)
    records: dict[str, Record] = {}
    for node in graph(settings)[:4]:
        records[node.name] = run_step(node, StepContext(settings), {name: records[name] for name in node.upstream},
                                      hooks=())
    assert list(records)[-1] == "transform"
    assert not any("shared_files" in record or "transfers" in record for record in records.values())
    assert files_under(settings.home) == {
        "downloads/green_tripdata_2021-01.parquet", "downloads/green_tripdata_2021-01.parquet.source",
        "downloads/green_tripdata_2021-02.parquet", "downloads/green_tripdata_2021-02.parquet.source",
        f"{WORKDIR}/train_clean.parquet", f"{WORKDIR}/validation_clean.parquet"}
    clean = settings.home / WORKDIR / "train_clean.parquet"
    assert shared_files.upload(settings.tracking_uri(), settings.home, [clean], RUN) == {}


@pytest.mark.slow
def test_files_move_with_mlflow_credentials_when_the_server_demands_them(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    admin = ("admin", "s3cret-Passw0rd")
    with mlflow_server(tmp_path, "--app-name", "basic-auth", env={
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret", "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1]}) as url:
        writer, reader = tmp_path / "A", tmp_path / "B"
        written = writer / WORKDIR / "encoder.json"
        written.parent.mkdir(parents=True)
        written.write_text('{"mode": "categorical"}')
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        with pytest.raises(TrackingError, match=r"^the tracking server \S+ refused access to its artifact store "
                                                r"\(HTTP 401\); set MLFLOW_TRACKING_USERNAME"):
            shared_files.upload(url, writer, [written], RUN)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
        manifest = shared_files.upload(url, writer, [written], RUN)
        fetched = reader / WORKDIR / "encoder.json"
        assert shared_files.fetch(url, fetched, manifest[f"{WORKDIR}/encoder.json"])
        assert fetched.read_bytes() == written.read_bytes()
        assert shared_files.remove(url, manifest, RUN) == [f"intermediates/{RUN}"]
        assert not (tmp_path / "artifacts" / "intermediates" / RUN).exists()


@pytest.mark.slow
def test_a_server_without_the_artifact_proxy_fails_at_once_in_one_sentence(tmp_path: Path) -> None:
    with mlflow_server(tmp_path, "--no-serve-artifacts") as url:
        written = tmp_path / "A" / WORKDIR / "encoder.json"
        written.parent.mkdir(parents=True)
        written.write_text("{}")
        started = time.monotonic()
        with pytest.raises(TrackingError, match=r"^the tracking server \S+ does not serve artifacts, .*; start it "
                                                r"with --serve-artifacts$"):
            shared_files.upload(url, tmp_path / "A", [written], RUN)
        assert time.monotonic() - started < 10, "no retries of the disabled proxy's answer"


@pytest.mark.slow
def test_make_clean_removes_what_the_partitions_steps_shared(server, tlc_server: TlcServer, tmp_path: Path) -> None:
    url, artifacts = server
    env = {"TAXIPIPE_HOME": str(tmp_path / "home"), "TAXIPIPE_MLFLOW__TRACKING_URI": url,
           "TAXIPIPE_DATA__URL_TEMPLATE": tlc_server.url_template}
    before = files_under(artifacts / shared_files.PREFIX)
    built = run_cli("make", "--year", "2021", "--month", "1", env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    shared = files_under(artifacts / shared_files.PREFIX) - before
    assert {name.split("/", 1)[1] for name in shared} >= {f"{WORKDIR}/model.bin", "deployments/green_2021-01.json"}
    cleaned = run_cli("make", "--clean", "--year", "2021", "--month", "1", env=env)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    said = {line.split()[1] for line in cleaned.stdout.splitlines() if "from the tracking server's artifact" in line}
    assert said == {f"{shared_files.PREFIX}/{name}" for name in shared}
    assert files_under(artifacts / shared_files.PREFIX) == before, "only the partition's files went"
