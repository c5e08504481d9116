"""Shared fixtures: real TLC months, a real HTTP server on 127.0.0.1, a fresh home per test."""

from __future__ import annotations

import fcntl
import http.server
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

from taxipipe.config import DEFAULT_URL_TEMPLATE, Settings, load_settings
from taxipipe.partition import Partition

if TYPE_CHECKING:
    from tests import forked

REPO = Path(__file__).resolve().parents[1]
TRAIN, VALIDATION = Partition("green", 2021, 1), Partition("green", 2021, 2)
#: The real months the suite reads (fetched from the TLC when no local copy is given).
TEST_MONTHS = (TRAIN, VALIDATION, Partition("green", 2021, 3), Partition("green", 2021, 4),
               Partition("green", 2023, 1), Partition("green", 2023, 2))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the modules for parallel workers (`make test` runs `pytest -n 4 --dist loadfile`).

    Each module runs on one worker, so its module fixtures (the stack, a Prefect server, a
    migrated Airflow home) start once. The modules with the most slow tests go first, so the
    long ones overlap instead of ending the run; a module's tests keep their file order.
    """
    slow_tests = Counter(item.module.__name__ for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow_tests[item.module.__name__])


def _data_dir() -> Path:
    """Real TLC months: $TAXIPIPE_TEST_DATA, ../shared/data/tlc, or a cache filled from the TLC."""
    given = os.environ.get("TAXIPIPE_TEST_DATA")
    if given:
        return Path(given)
    shared = REPO.parent / "shared" / "data" / "tlc"
    if shared.is_dir():
        return shared
    from taxipipe.serve.zones import TLC_ZONE_URL, ZONE_FILE, check_table
    from taxipipe.tlc import fetch, source_url

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "taxipipe" / "test-data"
    for partition in TEST_MONTHS:
        name = f"{partition.color}_tripdata_{partition.label}.parquet"
        fetch(source_url(DEFAULT_URL_TEMPLATE, partition), cache / name)
    fetch(TLC_ZONE_URL, cache / ZONE_FILE, check=check_table)
    return cache


@pytest.fixture(scope="session")
def tlc_dir() -> Path:
    return _data_dir()


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


@pytest.fixture(scope="session")
def tlc_server(tlc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlcServer]:
    """The real months and zone table (linked) plus room for files a test crafts, served on 127.0.0.1."""
    root = tmp_path_factory.mktemp("served")
    for source in [*tlc_dir.glob("*.parquet"), tlc_dir / "taxi_zone_lookup.csv"]:
        (root / source.name).symlink_to(source)
    server = TlcServer(root)
    yield server
    server.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_settings(home: Path, tlc_server: TlcServer):
    """Settings on a fresh home, green 2021-01 -> 2021-02 served over HTTP, plus overrides."""

    def build(**sections: dict[str, Any]) -> Settings:
        tables: dict[str, Any] = {"home": str(home),
                                  "data": {"year": 2021, "month": 1, "url_template": tlc_server.url_template,
                                           "download_backoff_seconds": 0.01}}
        for section, values in sections.items():
            tables.setdefault(section, {}).update(values)
        return load_settings(overrides=tables)

    return build


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
    return subprocess.run([sys.executable, "-m", "taxipipe.cli", *args], capture_output=True,
                          text=True, env=environment, cwd=cwd, timeout=timeout)


def start_cli(*args: str, env: dict[str, str] | None = None) -> forked.Child:
    """`taxipipe ARGS` in the background, in the environment `run_cli` gives (a forked child
    that answers as `subprocess.Popen` does)."""
    from tests import forked

    return forked.start_cli(list(args), command_env(env))


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


def cli_data_flags(home: Path, server: TlcServer, year: int = 2021, month: int = 1) -> list[str]:
    return ["--home", str(home), "--url-template", server.url_template,
            "--year", str(year), "--month", str(month)]


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


def wait_healthy(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    """Wait until `url`/health answers 200; fail early if the server process exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not become healthy in {seconds}s")


@pytest.fixture(scope="session")
def trained_home(tlc_server: TlcServer, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A home whose store holds a champion (version 1, the only one) trained on green 2021-01 by the
    simple runner. Never changed: tests take copies (a copied home keeps working: tests/test_store.py).

    Under parallel workers the first to need it trains it, under a lock in the run's temporary root.
    """
    if worker_id == "master":
        home = tmp_path_factory.mktemp("trained") / "home"
        train_champion(home, tlc_server)
        return home
    run_root = tmp_path_factory.getbasetemp().parent  # this run's, shared by its workers
    trained = run_root / "champion-home"
    with (run_root / "champion-home.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not trained.is_dir():
            building = run_root / "champion-home.part"
            shutil.rmtree(building, ignore_errors=True)
            train_champion(building, tlc_server)
            building.rename(trained)
    return trained


@pytest.fixture(scope="session")
def champion_home(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This worker's copy of the trained home, shared by the serving, batch and monitoring tests:
    they may add versions or runs but leave the alias on version 1."""
    home = tmp_path_factory.mktemp("champion") / "home"
    shutil.copytree(trained_home, home, copy_function=shutil.copy2)
    return home


@pytest.fixture
def champion_in_home(trained_home: Path, home: Path) -> Path:
    """The test's home, a copy of the trained home: version 1 is the champion and the only version."""
    shutil.copytree(trained_home, home, copy_function=shutil.copy2)
    return home


@pytest.fixture(scope="session")
def simple_rmse(trained_home: Path) -> float:
    """The simple runner's RMSE on green 2021-01 -> 2021-02: that of the trained home's version 1."""
    from mlflow import MlflowClient

    store = f"sqlite:///{trained_home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)  # not the registry an earlier test made current
    run = client.get_run(client.get_model_version("nyc-taxi-duration", "1").run_id)
    assert run.data.tags["runner"] == "simple" and run.data.tags["partition"] == "green/2021-01"
    return run.data.metrics["rmse"]


def train_champion(home: Path, server: TlcServer) -> None:
    """Run the simple runner in this process (the worker loads MLflow and XGBoost to serve it anyway)."""
    from taxipipe.runners.simple import SimplePipeline

    SimplePipeline(load_settings(overrides={"home": str(home), "data": {
        "year": 2021, "month": 1, "url_template": server.url_template}})).run()


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
