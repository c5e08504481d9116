"""What the test modules share besides fixtures: commands run as a user would, the HTTP server of
the real months, free ports, waiting for a condition, the URI of a home's MLflow store, serving."""

from __future__ import annotations

import contextlib
import http.server
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from taxipipe.config import Settings, load_settings
from taxipipe.partition import Partition

if TYPE_CHECKING:
    from tests import forked

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
#: The real months the suite reads (fetched from the TLC when no local copy is given).
TEST_MONTHS = tuple(Partition("green", year, month) for year, month in
                    [(2021, 1), (2021, 2), (2021, 3), (2021, 4), (2023, 1), (2023, 2)])
#: A ride as a client sends it to `taxipipe serve`.
RIDE = {"PULocationID": 74, "DOLocationID": 168, "trip_distance": 2.5}


def wait_for(condition: Callable[[], T], what: str, seconds: float = 180, interval: float = 0.05) -> T:
    """Call `condition` until it returns a true value, and return that value; fail naming `what`
    after `seconds` (generous: the suite runs on busy cores). A condition may raise to fail early."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g} s: {what}")
        time.sleep(interval)


def store_uri(home: Path, database: str = "mlflow/mlflow.db") -> str:
    """The SQLite URI of the MLflow store of `home` (or of another database file under `home`)."""
    return f"sqlite:///{home / database}"


class TlcServer:
    """Serves a directory over HTTP; tests can make the next answers for a file fail."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.faults: dict[str, list[int]] = defaultdict(list)
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append(name)
                if server.faults.get(name):
                    self.send_error(server.faults[name].pop(0))
                    return
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/{{color}}_tripdata_{{year}}-{{month:02d}}.parquet"

    def fail_next(self, name: str, *statuses: int) -> None:
        """Answer the next requests for `name` with these HTTP statuses, then serve normally."""
        self.faults[name].extend(statuses)

    def hits(self, name: str) -> int:
        return self.requests.count(name)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


#: Commands that start servers run in a fresh interpreter: serving sets OpenMP's thread count
#: before XGBoost is imported, and the servers start processes of their own.
FRESH_INTERPRETER = {"serve", "ui", "stack"}


def command_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A command's environment: this one without its TAXIPIPE_* settings, plus `env`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("TAXIPIPE_")}, **(env or {})}


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run `taxipipe ARGS` as a user would, in a child process (forked from one that has
    imported the pipeline's libraries, tests/forked.py, unless it starts a server)."""
    from tests import forked

    environment = command_env(env)
    if not FRESH_INTERPRETER.intersection(args):
        return forked.run_cli(list(args), environment, cwd, timeout)
    return subprocess.run([sys.executable, "-m", "taxipipe", *args], capture_output=True,
                          text=True, env=environment, cwd=cwd, timeout=timeout)


def start_cli(*args: str, env: dict[str, str] | None = None) -> forked.Child:
    """`taxipipe ARGS` in the background, in the environment `run_cli` gives (a forked child
    that answers as `subprocess.Popen` does)."""
    from tests import forked

    return forked.start_cli(list(args), command_env(env))


def run_on_terminal(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                    timeout: float = 900) -> tuple[int, str]:
    """Run a command on a real pseudo-terminal (stdin, stdout and stderr); its status and output."""
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen(args, stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd=cwd,
                               start_new_session=True)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return process.wait(timeout=timeout), output.decode()


def cli_data_flags(home: Path, server: TlcServer, year: int = 2021, month: int = 1) -> list[str]:
    return ["--home", str(home), "--url-template", server.url_template,
            "--year", str(year), "--month", str(month)]


def final_rmse(output: str) -> float:
    """The RMSE a run's final summary printed (`📊 Final model RMSE: 6.0507`)."""
    return float(output.split("📊 Final model RMSE: ")[1].split()[0])


def final_run_id(output: str) -> str:
    """The MLflow run id a run's final summary printed (`🆔 Model run ID: ...`)."""
    return output.split("🆔 Model run ID: ")[1].split()[0]


def train_line(output: str) -> str:
    """The line the train step printed (`xgboost RMSE 6.0507 on 2021-02, trained on 2021-01 (...)`)."""
    [line] = [line.strip() for line in output.splitlines() if " RMSE " in line and ", trained on " in line]
    return line


def train_champion(home: Path, server: TlcServer) -> None:
    """Run the simple runner in this process (the worker loads MLflow and XGBoost to serve it anyway)."""
    from taxipipe.runners.simple import SimplePipeline

    SimplePipeline(load_settings(overrides={"home": str(home), "data": {
        "year": 2021, "month": 1, "url_template": server.url_template}})).run()


def _ephemeral_ports() -> range:
    """The ports the kernel hands to `bind(0)` and outgoing connections."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """A port nothing listens on now, below the kernel's ephemeral range.

    The suite runs in parallel workers: a port the kernel chose for one probe could be handed
    to another worker's `bind(0)` (a Dask worker, a client socket) before the server the test
    starts binds it. Ports below the ephemeral range are never handed out that way.
    """
    ephemeral = _ephemeral_ports()
    candidates = range(10000, ephemeral.start) if ephemeral.start > 11000 else range(ephemeral.stop, 65536)
    for _ in range(200):
        port = random.choice(candidates)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port outside the ephemeral range")


def stop(process: subprocess.Popen) -> str:
    """Stop a server the test started, by its pid (SIGTERM, then SIGKILL after 20 s); its output."""
    process.terminate()
    try:
        return process.communicate(timeout=20)[0] or ""
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0] or ""


@contextlib.contextmanager
def running_ui(root: Path) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    """`taxipipe ui` on a free port, serving the store of its own home under `root`; yields its
    URL, that home and the process, then stops it by its pid and checks its output."""
    port = free_port()
    server_home = root / "server-home"
    process = subprocess.Popen(
        [sys.executable, "-m", "taxipipe", "ui", "--home", str(server_home), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, server_home, process
    finally:
        output = stop(process)
    assert f"MLflow UI on {url}/#/experiments?workflowType=machine_learning" in output
    # the runs' requests leave no access-log lines, and no library warns on the console
    assert "HTTP/1.1" not in output and "Warning" not in output, output[-2000:]
    # MLflow names the hosts it answers instead of advising --host 0.0.0.0, a flag `ui` lacks
    assert "0.0.0.0" not in output and "--allowed-hosts" not in output, output[-2000:]


def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    """Wait until `url`/health answers 200; fail early if the server process exits."""

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, f"{url} answers /health", seconds, interval=0.5)


def stop_processes(processes: list[subprocess.Popen], seconds: float = 30) -> None:
    """SIGTERM each process (the last started first), then SIGKILL any still running after `seconds`."""
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve_settings(home: Path, **serve: Any) -> Settings:
    """Settings on `home` with these `serve` settings."""
    return load_settings(overrides={"home": str(home), "serve": serve})


def start_serve(home: Path, port: int, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`taxipipe serve` on `home` and `port` in a fresh interpreter, its output piped."""
    return subprocess.Popen([sys.executable, "-m", "taxipipe", "serve", "--home", str(home), "--port", str(port),
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=command_env(env), cwd=REPO)
