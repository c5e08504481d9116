"""`taxipipe serve` as a process: how it stops, where it listens, what it says."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.helpers import RIDE, free_port, start_serve, wait_for, wait_healthy


def partial_request(port: int, body: bytes) -> tuple[socket.socket, bytes]:
    """A connection that sent the headers and half of the body of POST /predict/batch; the rest to send."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (f"POST /predict/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    half = len(body) // 2
    connection.sendall(head + body[:half])
    return connection, body[half:]


def read_status(connection: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = connection.recv(4096)
        if not chunk:
            break
        answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.slow
def test_sigterm_under_load_answers_every_accepted_request_and_exits_0(champion_home: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_serve(champion_home, port)
    wait_healthy(url, process)
    batch = json.dumps({"rides": [RIDE] * 5000}).encode()
    answered: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        """Post batches back to back; a request the server never read (refused, or reset before any
        answer) ends the loop; an answer that is not 200 or breaks off is a failure."""
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                try:
                    with client.stream("POST", "/predict/batch", content=batch,
                                       headers={"Content-Type": "application/json"}) as response:
                        try:
                            body = response.read()
                        except httpx.HTTPError as exc:
                            failures.append(f"answer broke off: {exc!r}")
                            return
                except httpx.TransportError:
                    return
                answered.append(response.status_code)
                if response.status_code != 200 or len(json.loads(body)["durations"]) != 5000:
                    failures.append(body[:200].decode())

    def loaded() -> bool:
        if len(answered) >= 20 or failures:
            return True
        assert any(client.is_alive() for client in clients), failures
        return False

    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        wait_for(loaded, "20 answers under load", 300)
        pending, rest = partial_request(port, batch)
        httpx.get(f"{url}/health", timeout=60)  # the server has read the partial request's headers by now
        process.send_signal(signal.SIGTERM)
        pending.sendall(rest)
        assert read_status(pending) == 200
        pending.close()
        stdout, stderr = process.communicate(timeout=120)
    finally:
        stop.set()
        for client in clients:
            client.join()
        if process.poll() is None:
            process.kill()
    assert failures == []
    assert process.returncode == 0, stderr
    assert "interrupted" not in stdout + stderr and "Traceback" not in stderr
    assert stdout.strip().splitlines()[-1].startswith("👋 stopped by SIGTERM")
    assert set(answered) == {200}


def test_port_in_use_is_one_sentence_before_loading(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_serve(tmp_path / "home", port)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert stderr.strip().splitlines() == [f"❌ port {port} on 127.0.0.1 is in use by another program: stop it or "
                                           "choose another port (--port or serve.port)"]
    assert "serving" not in stdout and not (tmp_path / "home" / "mlflow").exists()


@pytest.mark.slow
def test_docs_render_in_a_browser_without_the_internet(champion_home: Path, tmp_path: Path) -> None:
    """Chromium, every address but the server's sent to a dead proxy, renders /docs and runs its script."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert browser, "a Chromium browser is needed to render /docs"
    port = free_port()
    process = start_serve(champion_home, port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        dead_proxy = f"127.0.0.1:{free_port()}"
        rendered = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--proxy-server={dead_proxy}",
                                   f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                                   f"http://127.0.0.1:{port}/docs"], capture_output=True, text=True, timeout=120)
    finally:
        process.terminate()
        process.communicate(timeout=60)
    dom = rendered.stdout
    assert 'data-ready="yes"' in dom, dom[:2000]
    for endpoint in ("/predict", "/predict/batch", "/invocations", "/health", "/admin/reload"):
        assert f'data-path="{endpoint}"' in dom
