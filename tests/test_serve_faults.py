"""Faults that must not break serving: artifacts gone, hostile bodies, dropped clients, open admin."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from taxipipe import tracking
from taxipipe.config import Settings, load_settings
from taxipipe.serve.admin import exposure_warning
from taxipipe.serve.app import create_app
from taxipipe.serve.edge import body_limit
from tests.helpers import RIDE, free_port, run_cli, serve_settings, start_serve, wait_for, wait_healthy

NAME = "nyc-taxi-duration"
DEEP = "[" * 100_000 + "]" * 100_000


def version_with_artifacts_gone(settings: Settings) -> str:
    """A registered version whose model has no artifacts (as when they were deleted from the store)."""
    registry = tracking.client(settings)
    first = registry.get_model_version(NAME, "1")
    experiment = registry.get_run(first.run_id).info.experiment_id
    logged = registry.create_logged_model(experiment_id=experiment, name="artifacts-gone")
    return registry.create_model_version(NAME, f"models:/{logged.model_id}", run_id=first.run_id,
                                         model_id=logged.model_id).version


@contextmanager
def champion_alias_on(settings: Settings, version: str) -> Iterator[None]:
    """Move the alias for the block; back on version 1 afterwards (the shared store's promise)."""
    registry = tracking.client(settings)
    registry.set_registered_model_alias(NAME, tracking.CHAMPION, version)
    try:
        yield
    finally:
        registry.set_registered_model_alias(NAME, tracking.CHAMPION, "1")


def test_reload_to_a_version_whose_artifacts_are_gone_keeps_serving_and_says_why(champion_home: Path) -> None:
    settings = serve_settings(champion_home, reload_seconds=3600)
    broken = version_with_artifacts_gone(settings)
    with TestClient(create_app(settings)) as service:
        assert service.get("/health").json()["version"] == 1
        with champion_alias_on(settings, broken):
            answer = service.post("/admin/reload")
            assert answer.status_code == 502
            reason = answer.json()["reload_error"]
            assert reason.startswith(f"version {broken} of '{NAME}' (alias 'champion') cannot be loaded")
            assert "No such artifact" in reason
            health = service.get("/health").json()
            assert health["status"] == "stale" and health["version"] == 1
            assert health["registry_version"] == int(broken) and health["warning"] == reason
            assert service.post("/predict", json=RIDE).json()["model_version"] == 1
            metrics = service.get("/metrics").text
            assert "taxipipe_serve_model_reload_failures_total 1.0" in metrics
            assert f"taxipipe_serve_registry_model_version {float(broken)}" in metrics
            assert "taxipipe_serve_worker_model_version 1.0" in metrics
        assert service.post("/admin/reload").status_code == 200
        assert service.get("/health").json()["status"] == "ok"


def test_a_champion_deleted_while_serving_is_stale_with_the_reason(champion_in_home: Path) -> None:
    """The alias, then the whole registered model, deleted under a serving v1: `stale`, the reason, a failing lookup."""
    settings = serve_settings(champion_in_home, reload_seconds=3600)
    registry = tracking.client(settings)
    with TestClient(create_app(settings)) as service:
        assert service.get("/health").json()["status"] == "ok"
        for delete in (lambda: registry.delete_registered_model_alias(NAME, tracking.CHAMPION),
                       lambda: registry.delete_registered_model(NAME)):
            delete()
            reload = service.post("/admin/reload")
            assert reload.status_code == 502 and "any more" in reload.json()["reload_error"]
            health = service.get("/health").json()
            assert health["status"] == "stale" and health["version"] == 1 and health["registry_version"] is None
            assert health["warning"].startswith(f"no model carries the alias 'champion' of '{NAME}' any more")
            assert health["warning"].endswith("still serving version 1 until a champion is set again")
            assert "taxipipe_serve_champion_lookup_failing 1.0" in service.get("/metrics").text
            assert service.post("/predict", json=RIDE).json()["model_version"] == 1


def test_started_on_a_champion_whose_artifacts_are_gone_answers_503_with_the_reason(champion_home: Path) -> None:
    settings = serve_settings(champion_home)
    broken = version_with_artifacts_gone(settings)
    with champion_alias_on(settings, broken), TestClient(create_app(settings)) as service:
        health = service.get("/health").json()
        assert health["status"] == "no champion" and health["registry_version"] == int(broken)
        assert health["detail"].startswith(f"version {broken} of '{NAME}'")
        for path, body in (("/predict", RIDE), ("/predict/batch", {"rides": [RIDE]}), ("/invocations", {"inputs": [RIDE]})):
            answer = service.post(path, json=body)
            assert answer.status_code == 503 and health["detail"] in answer.text
        assert service.get("/ping").status_code == 503
        assert "taxipipe_serve_model_loaded 0.0" in service.get("/metrics").text


@pytest.fixture
def client(champion_home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(serve_settings(champion_home))) as test_client:
        yield test_client


def test_deeply_nested_json_is_a_client_error(client: TestClient) -> None:
    for path in ("/predict", "/predict/batch"):
        answer = client.post(path, content=DEEP)
        assert answer.status_code == 422 and answer.json()["rule"] == "must not nest arrays or objects this deeply"
    answer = client.post("/invocations", content=DEEP, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and "nested too deeply" in answer.json()["message"]
    nested_ride = client.post("/predict/batch", content='{"rides": [' + "[" * 900 + "]" * 900 + "]}")
    assert nested_ride.status_code == 422 and len(nested_ride.json()["input"]) <= 203
    assert 'status="500"' not in client.get("/metrics").text


def test_bodies_over_the_limit_are_413(champion_home: Path) -> None:
    with TestClient(create_app(serve_settings(champion_home, batch_limit=10))) as small:
        _check_body_limit(small)


def _check_body_limit(client: TestClient) -> None:
    limit = body_limit(10)
    padding = " " * limit
    declared = client.post("/predict/batch", content=json.dumps({"rides": [RIDE]}) + padding)
    assert declared.status_code == 413 and f"over {limit:,} bytes" in declared.json()["detail"]
    assert declared.headers["connection"] == "close"
    chunked = client.post("/invocations", content=(part for part in [b'{"inputs": [', padding.encode(), b"]}"]),
                          headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error_code"] == "BAD_REQUEST"
    assert client.post("/predict/batch", json={"rides": [RIDE] * 10}).status_code == 200


def test_admin_needs_a_token_beyond_loopback(champion_home: Path, tmp_path: Path) -> None:
    open_wide = load_settings(overrides={"home": str(champion_home), "serve": {"host": "0.0.0.0"}})
    warning = exposure_warning(open_wide)
    assert warning and "0.0.0.0 is not a loopback address" in warning and "/admin/reload is refused" in warning
    with TestClient(create_app(open_wide)) as service:
        refused = service.post("/admin/reload")
        assert refused.status_code == 403 and "serve.admin_token" in refused.json()["detail"]
        assert service.post("/predict", json=RIDE).status_code == 200
    secret = tmp_path / "admin-token"
    secret.write_text("s3cret-token\n")
    guarded = load_settings(overrides={"home": str(champion_home),
                                       "serve": {"host": "0.0.0.0", "admin_token_file": str(secret)}})
    assert exposure_warning(guarded) is None
    with TestClient(create_app(guarded)) as service:
        assert service.post("/admin/reload").status_code == 401
        assert service.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert service.post("/admin/reload", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    loopback = serve_settings(champion_home)
    assert exposure_warning(loopback) is None
    with TestClient(create_app(loopback)) as service:
        assert service.post("/admin/reload").status_code == 200


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    first_line: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


#: Short limits of the module's server, so the tests of them wait seconds, not the defaults' tens.
HEADER_SECONDS, KEEP_ALIVE_SECONDS, BODY_SECONDS = 2, 1, 2


@pytest.fixture(scope="module")
def server(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `taxipipe serve --port 0` for the module's hostile clients; it must stop cleanly after them.

    It serves its own copy of the trained home: the tests that move the alias to a broken version on the
    shared home never reach its watcher."""
    home = tmp_path_factory.mktemp("hostile-clients") / "home"
    shutil.copytree(trained_home, home, copy_function=shutil.copy2)
    process = start_serve(home, 0, env={"TAXIPIPE_SERVE__BODY_TIMEOUT_SECONDS": str(BODY_SECONDS),
                                                 "TAXIPIPE_SERVE__HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
                                                 "TAXIPIPE_SERVE__KEEP_ALIVE_SECONDS": str(KEEP_ALIVE_SECONDS)})
    try:
        first_line = process.stdout.readline()
        port = int(first_line.split(" on http://127.0.0.1:")[1].split()[0])
        wait_healthy(f"http://127.0.0.1:{port}", process)
        yield Server(process, port, first_line)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr


def test_port_0_prints_the_port_it_got(server: Server) -> None:
    assert server.port != 0 and f"on {server.url} (Ctrl-C stops it)" in server.first_line
    assert httpx.get(f"{server.url}/health", timeout=60).json()["version"] == 1


@pytest.mark.slow
def test_hostile_clients_against_a_real_server(server: Server) -> None:
    """A 50 MB declared body is refused before it is sent; a slow body times out; dropped clients are no 500s."""
    port, url = server.port, server.url

    def raw(head: str, body: bytes = b"") -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", port), timeout=60)
        connection.sendall(head.encode() + body)
        return connection

    post = "POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    big = _answer(raw(post.format(50_000_000)))  # nothing of the body is sent: the answer must not wait for it
    assert big.startswith(b"HTTP/1.1 413") and b"the limit for serve.batch_limit rides" in big
    started = time.monotonic()
    slow = _answer(raw(post.format(1000), b'{"rides": ['))
    assert slow.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 30
    for _ in range(20):
        raw(post.format(1000), b'{"rides": [').close()
    with httpx.Client(base_url=url, timeout=60) as http:
        wait_for(lambda: 'status="499"} 20.0' in http.get("/metrics").text, "the 20 abandoned requests counted as 499",
                 60, interval=0.2)
        metrics = http.get("/metrics").text
        assert 'taxipipe_serve_requests_total{endpoint="/predict/batch",status="499"} 20.0' in metrics
        assert 'status="500"' not in metrics
        assert http.post("/predict", content=DEEP).status_code == 422
        assert http.post("/predict", json=RIDE).status_code == 200


def _answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    connection.close()
    return received


@pytest.mark.slow
def test_slow_headers_and_silent_connections_are_closed_in_time(server: Server) -> None:
    """200 clients that never finish their headers and 20 that send nothing are all closed by the
    server within the limits, and /health answers meanwhile."""
    import selectors

    started = time.monotonic()
    partial = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(200)]
    for connection in partial:
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(20)]
    health = time.monotonic()
    assert httpx.get(f"{server.url}/health", timeout=60).status_code == 200
    health = time.monotonic() - health
    open_ = {connection: b"" for connection in partial + silent}
    closed_after: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as selector:
        for connection in open_:
            selector.register(connection, selectors.EVENT_READ)
        deadline = started + HEADER_SECONDS + 30  # generous for a busy machine; unguarded, they stay open
        while len(closed_after) < len(open_) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                chunk = key.fileobj.recv(65536)
                open_[key.fileobj] += chunk
                if not chunk:
                    closed_after[key.fileobj] = time.monotonic() - started
                    selector.unregister(key.fileobj)
    for connection in open_:
        connection.close()
    assert len(closed_after) == len(open_), f"{len(open_) - len(closed_after)} connections still open"
    assert all(open_[connection].startswith(b"HTTP/1.1 408") and b"serve.header_timeout_seconds" in open_[connection]
               for connection in partial)
    assert all(open_[connection] == b"" for connection in silent)
    assert min(closed_after[connection] for connection in partial) >= HEADER_SECONDS * 0.9
    assert min(closed_after[connection] for connection in silent) >= KEEP_ALIVE_SECONDS * 0.9
    assert health < 5, f"/health took {health:.1f} s while 220 connections were held open"


@pytest.mark.slow
def test_a_parquet_bomb_is_refused_before_it_is_decoded(server: Server) -> None:
    """274 KB of Parquet that decodes to 20 million rides: 413 from the footer, the server's memory unmoved."""
    import psutil
    import pyarrow as pa
    import pyarrow.parquet as pq

    million = pa.table({"PULocationID": pa.array([74] * 1_000_000), "DOLocationID": pa.array([168] * 1_000_000),
                        "trip_distance": pa.array([2.5] * 1_000_000)})
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, million.schema, compression="zstd") as writer:
        for _ in range(20):
            writer.write_table(million)
    bomb = sink.getvalue().to_pybytes()
    assert len(bomb) < 1_000_000
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    for _ in range(3):
        answer = httpx.post(f"{server.url}/invocations", content=bomb, timeout=60,
                            headers={"Content-Type": "application/vnd.apache.parquet"})
        assert answer.status_code == 413, answer.text
        assert answer.json()["message"].endswith("got 20,000,000")
    growth = process.memory_info().rss - before
    assert growth < BOMB_RSS_GROWTH, f"RSS grew by {growth / 2**20:.0f} MiB"


#: The most the server's RSS may grow while refusing Parquet bombs (docs/serving.md says so).
BOMB_RSS_GROWTH = 50 * 2**20


@pytest.mark.slow
def test_two_workers_reload_together_and_start_on_a_broken_store(champion_home: Path) -> None:
    settings = serve_settings(champion_home)
    registry = tracking.client(settings)
    first = registry.get_model_version(NAME, "1")
    copy = registry.create_model_version(NAME, first.source, run_id=first.run_id).version
    broken = version_with_artifacts_gone(settings)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve(champion_home, port, "--workers", "2")
    try:
        wait_healthy(url, process)
        with httpx.Client(base_url=url, timeout=120) as http, _with_server_log(process):
            wait_for(lambda: len(http.get("/health").json().get("workers", [])) >= 2, "both workers start", 120,
                     interval=0.2)
            with champion_alias_on(settings, copy):
                reload = http.post("/admin/reload")
                assert reload.status_code == 200, reload.text
                assert [worker["version"] for worker in reload.json()["workers"]] == [int(copy)] * 2
                versions = {http.post("/predict", json=RIDE, headers={"Connection": "close"}).json()["model_version"]
                            for _ in range(30)}
                assert versions == {int(copy)}
                served = [line for line in http.get("/metrics").text.splitlines()
                          if line.startswith("taxipipe_serve_worker_model_version{")]
                assert len(served) == 2 and all(line.endswith(f" {float(copy)}") for line in served), served
            with champion_alias_on(settings, broken):
                failed = http.post("/admin/reload")
                assert failed.status_code == 502
                assert [worker["version"] for worker in failed.json()["workers"]] == [int(copy)] * 2
                assert all("cannot be loaded" in worker["reload_error"] for worker in failed.json()["workers"])
                assert http.post("/predict", json=RIDE).json()["model_version"] == int(copy)
            assert http.post("/admin/reload").status_code == 200
            victim = http.get("/health").json()["workers"][0]["pid"]
            os.kill(victim, signal.SIGKILL)
            # A new connection each time: the client's kept-alive one may have been the victim's.
            wait_for(lambda: f'pid="{victim}"' not in httpx.get(f"{url}/metrics", headers={"Connection": "close"},
                                                                timeout=120).text,
                     "the killed worker's series leaves /metrics", 120, interval=0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0 and "👋 stopped by SIGTERM" in stdout, stderr
    with champion_alias_on(settings, broken):
        process = start_serve(champion_home, port, "--workers", "2")
        try:
            wait_healthy(url, process)
            with httpx.Client(base_url=url, timeout=120) as http:
                health = http.get("/health").json()
                assert health["status"] == "no champion" and f"version {broken}" in health["detail"]
                answer = http.post("/predict", json=RIDE)
                assert answer.status_code == 503 and "cannot be loaded" in answer.json()["detail"]
        finally:
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr


@contextmanager
def _with_server_log(process: subprocess.Popen) -> Iterator[None]:
    """A failed check shows what the server logged (it is stopped to read it)."""
    try:
        yield
    except AssertionError as exc:
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=120)[1]
        raise AssertionError(f"{exc}\n--- server stderr\n{stderr[-5000:]}") from None


def test_cli_settings_never_print_the_token(tmp_path: Path) -> None:
    result = run_cli("config", "show", env={"TAXIPIPE_SERVE__ADMIN_TOKEN": "s3cret-token",
                                            "TAXIPIPE_HOME": str(tmp_path / "home")})
    assert result.returncode == 0 and "s3cret-token" not in result.stdout + result.stderr
    assert "serve.admin_token" in result.stdout


def test_an_unreadable_token_file_is_one_sentence_before_listening(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    result = run_cli("serve", "--home", str(tmp_path / "home"), "--port", str(free_port()),
                     env={"TAXIPIPE_SERVE__ADMIN_TOKEN_FILE": str(missing)})
    assert result.returncode == 1
    assert result.stderr.strip() == f"❌ serve.admin_token_file {missing} cannot be read: No such file or directory"
    assert "serving" not in result.stdout


def test_a_worker_reporting_from_two_threads_at_once_never_fails(tmp_path: Path) -> None:
    """The reload handler and the watcher may report at the same moment (seen as a 500 on a reload)."""
    import threading

    from taxipipe.serve.workers import Workers

    workers = Workers(tmp_path)
    errors: list[BaseException] = []

    def report(generation: int) -> None:
        try:
            for _ in range(300):
                workers.report(generation, {"version": generation})
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(generation,)) for generation in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [state["generation"] for state in workers.states()] == [3]
