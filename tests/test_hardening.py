"""Breaking taxipipe on purpose: kills, concurrent runs, moved homes, full and read-only disks.

One test per defect of the hardening issue; each failed before the fix.
"""

from __future__ import annotations

import http.client
import http.server
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.conftest import TlcServer, cli_data_flags, run_cli
from tests.test_tracking_server import free_port, wait_healthy

MODEL = "nyc-taxi-duration"
FAST = {"TAXIPIPE_DATA__DOWNLOAD_BACKOFF_SECONDS": "0.01"}
OPEN_STORE = """
import sys
from taxipipe import tracking
from taxipipe.config import load_settings

settings = load_settings(overrides={"home": sys.argv[1]})
print(tracking.experiment_id(settings, tracking.client(settings), "simple"))
"""


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXIPIPE_")}
    return {**env, **FAST, **extra}


def start_run(*args: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "taxipipe.cli", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(), **popen)


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def one_sentence_failure(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Exit 1, no traceback, a ❌ line naming each phrase; return that line."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("❌")]
    assert lines, output[-3000:]
    for phrase in phrases:
        assert phrase in lines[-1], lines[-1]
    return lines[-1]


def served_folder(server: TlcServer, folder: str, files: dict[str, pa.Table | Path]) -> str:
    """Serve crafted months under /folder/ and return the URL template that reaches them."""
    root = server.root / folder
    root.mkdir(exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, root / name)
        else:
            pq.write_table(content, root / name)
    return f"http://127.0.0.1:{server.port}/{folder}/{{color}}_tripdata_{{year}}-{{month:02d}}.parquet"


def models(home_or_uri: Path | str) -> Any:
    from mlflow import MlflowClient

    uri = home_or_uri if isinstance(home_or_uri, str) else f"sqlite:///{home_or_uri / 'mlflow' / 'mlflow.db'}"
    return MlflowClient(uri, registry_uri=uri)


# 1 -- an interrupted first run ------------------------------------------------------------

@pytest.mark.slow
def test_interrupted_first_run_leaves_no_broken_store(tmp_path: Path, tlc_server: TlcServer) -> None:
    """Ctrl-C or a kill while the store is being created: the next run still works."""
    homes = []
    for number, (signum, delay) in enumerate([(signal.SIGINT, 0.0), (signal.SIGINT, 0.4), (signal.SIGINT, 1.0),
                                              (signal.SIGKILL, 0.0), (signal.SIGKILL, 0.4),
                                              (signal.SIGKILL, 1.0)]):
        home = tmp_path / f"home{number}"
        process = start_run(*cli_data_flags(home, tlc_server))
        store = home / "mlflow"
        wait_for(lambda: process.poll() is not None or (store.is_dir() and any(
            "mlflow.db" in path.name and not path.name.endswith(".lock") for path in store.iterdir())),
            "the store is being created")
        time.sleep(delay)
        finished_first = process.poll() is not None
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
        if finished_first:
            assert process.returncode == 0, err[-2000:]
        elif signum == signal.SIGINT:
            assert process.returncode == 130, out + err
            assert err.strip().splitlines()[-1] == "❌ interrupted", err
            assert "Traceback" not in err
        else:
            assert process.returncode == -signal.SIGKILL
        opened = subprocess.run([sys.executable, "-c", OPEN_STORE, str(home)], capture_output=True, text=True,
                                env=child_env(), timeout=300)
        assert opened.returncode == 0, f"{signum!r} after {delay}s broke the store: {opened.stderr[-2000:]}"
        homes.append(home)
    again = run_cli("run", *cli_data_flags(homes[-1], tlc_server), env=FAST)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_sigterm_prints_one_line_and_exits_143(home: Path, tlc_server: TlcServer) -> None:
    process = start_run(*cli_data_flags(home, tlc_server))
    wait_for(lambda: (home / "state" / "make.owner").exists(), "the run holds its home")
    process.terminate()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, out + err
    assert err.strip().splitlines()[-1] == "❌ interrupted"


# 2 -- the champion gate fails closed --------------------------------------------------------

class RegistryProxy:
    """A real HTTP proxy in front of a tracking server that can answer 503 to the alias lookup."""

    ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"

    def __init__(self, upstream_port: int) -> None:
        self.fail_alias = False
        self.refused: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                if proxy.fail_alias and self.command == "GET" and self.path.startswith(proxy.ALIAS_PATH):
                    proxy.refused.append(self.path)
                    self.send_error(503, "registry unavailable")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                connection = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection"}}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                answer = connection.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                connection.close()

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
def test_registry_errors_fail_the_gate_closed(tmp_path: Path, home: Path, tlc_server: TlcServer) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "taxipipe.cli", "ui", "--home", str(tmp_path / "server"),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=child_env())
    proxy = RegistryProxy(port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        flags = [*cli_data_flags(home, tlc_server), "--tracking-uri", proxy.url]
        retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **FAST}
        first = run_cli("run", *flags, env=retries)
        assert first.returncode == 0, first.stderr[-3000:]
        champion = models(proxy.url).get_model_version_by_alias(MODEL, "champion")

        proxy.fail_alias = True
        worse = run_cli("run", *flags, env={**FAST, "TAXIPIPE_MODEL__PARAMS__MAX_DEPTH": "1"})
        line = one_sentence_failure(worse, "champion", MODEL, "nothing was promoted")
        assert "validate_model" in worse.stdout, worse.stdout[-2000:]
        assert len(proxy.refused) == 5, f"the alias lookup was tried {len(proxy.refused)} times, not 1 + 4 retries"
        proxy.fail_alias = False
        registry = models(proxy.url)
        assert registry.get_model_version_by_alias(MODEL, "champion").version == champion.version, line
        assert [v.version for v in registry.search_model_versions(f"name = '{MODEL}'")] == [champion.version]
    finally:
        proxy.close()
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def test_missing_alias_or_model_means_no_champion_and_other_errors_raise(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from taxipipe import tracking
    from taxipipe.config import load_settings
    from taxipipe.errors import TrackingError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = load_settings(overrides={"home": str(tmp_path)})
    client = tracking.client(settings)
    assert tracking.champion_version(client, "no-such-model") is None
    client.create_registered_model("no-alias-yet")
    assert tracking.champion_version(client, "no-alias-yet") is None
    unreachable = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match="nothing was promoted"):
        tracking.champion_version(MlflowClient(unreachable, registry_uri=unreachable), "m")


# 3 -- URL templates and the download cache --------------------------------------------------

@pytest.mark.parametrize("template", [
    "http://127.0.0.1:1/{color}_tripdata_{year}.parquet",
    "http://127.0.0.1:1/{color}_tripdata_{year}-{month:02d}{foo}.parquet",
    "http://127.0.0.1:1/{color}_tripdata_{year}-{month:02d.parquet",
    "http://127.0.0.1:1/{color}_tripdata_{year}-{month:q}.parquet",
])
def test_bad_url_template_is_one_sentence(home: Path, template: str) -> None:
    for command in (["run"], ["make", "extract"], ["make", "--dry-run"]):
        result = run_cli(*command, "--home", str(home), "--url-template", template)
        one_sentence_failure(result, "data.url_template")
    assert not (home / "downloads").exists()


@pytest.mark.slow
def test_cached_download_is_reused_only_from_the_same_source(home: Path, tlc_server: TlcServer,
                                                             tlc_dir: Path) -> None:
    other = served_folder(tlc_server, "other-source", {
        "green_tripdata_2021-01.parquet": tlc_dir / "green_tripdata_2021-03.parquet",
        "green_tripdata_2021-02.parquet": tlc_dir / "green_tripdata_2021-04.parquet"})
    january = home / "downloads" / "green_tripdata_2021-01.parquet"
    flags = cli_data_flags(home, tlc_server)

    first = run_cli("make", "extract", *flags)
    assert first.returncode == 0, first.stderr
    assert january.read_bytes() == (tlc_dir / "green_tripdata_2021-01.parquet").read_bytes()
    moved = run_cli("make", "extract", *flags, "--url-template", other)
    assert moved.returncode == 0, moved.stderr
    assert "2021-01 downloaded" in moved.stdout, moved.stdout
    assert january.read_bytes() == (tlc_dir / "green_tripdata_2021-03.parquet").read_bytes()
    assert (home / "downloads" / "green_tripdata_2021-01.parquet.source").read_text().startswith(
        other.split("{")[0])
    back = run_cli("make", "extract", *flags)
    assert "2021-01 downloaded" in back.stdout, back.stdout
    assert january.read_bytes() == (tlc_dir / "green_tripdata_2021-01.parquet").read_bytes()
    again = run_cli("make", "extract", *flags, "--force")
    assert "2021-01 cached" in again.stdout, again.stdout


# 4 -- concurrent runs on one home ------------------------------------------------------------

@pytest.mark.slow
def test_concurrent_runs_on_one_home_wait_for_each_other(home: Path, tlc_server: TlcServer) -> None:
    first = start_run(*cli_data_flags(home, tlc_server))
    wait_for(lambda: (home / "state" / "make.owner").exists() or first.poll() is not None, "the first run starts")
    second = start_run(*cli_data_flags(home, tlc_server))
    results = [process.communicate(timeout=600) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [err[-2000:] for _, err in results]
    assert "⏳ Waiting for another taxipipe run (pid " in results[1][0]
    assert "`taxipipe run`, green 2021-01" in results[1][0]


# 5 -- a moved or copied home -----------------------------------------------------------------

def artifact_files(home: Path) -> set[str]:
    return {path.relative_to(home).as_posix() for path in (home / "mlflow" / "artifacts").rglob("*")}


@pytest.mark.slow
def test_moved_and_copied_homes_keep_working(tmp_path: Path, tlc_server: TlcServer) -> None:
    original, copy, moved = tmp_path / "original", tmp_path / "copy", tmp_path / "moved"
    built = run_cli("run", *cli_data_flags(original, tlc_server), env=FAST)
    assert built.returncode == 0, built.stderr[-2000:]
    shutil.copytree(original, copy)
    before = artifact_files(original)

    in_copy = run_cli("run", *cli_data_flags(copy, tlc_server), env=FAST)
    assert in_copy.returncode == 0, in_copy.stderr[-3000:]
    assert artifact_files(original) == before, "the copy wrote into the original home"
    assert len(artifact_files(copy)) > len(before)

    original.rename(moved)
    in_moved = run_cli("run", *cli_data_flags(moved, tlc_server), env=FAST)
    assert in_moved.returncode == 0, in_moved.stderr[-3000:]
    registry = models(moved)
    for version in registry.search_model_versions(f"name = '{MODEL}'"):
        assert str(moved) in registry.get_run(version.run_id).info.artifact_uri
    import mlflow.pyfunc

    store = f"sqlite:///{moved / 'mlflow' / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")


# 6 -- one sentence for full and read-only disks, broken stores ------------------------------

ROOT = os.geteuid() == 0


@contextmanager
def small_disk(folder: Path, size_kb: int) -> Iterator[dict[str, Any]]:
    """A real disk of `size_kb` at `folder`: a tmpfs (as root), else a file-size limit for the child."""
    folder.mkdir(parents=True)
    if ROOT:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], check=True)
        try:
            yield {}
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size_kb * 1024, size_kb * 1024))

        yield {"preexec_fn": limit}


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for real: a read-only tmpfs as root (root ignores modes), else mode 0555."""
    folder.mkdir(parents=True, exist_ok=True)
    if ROOT:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


def run_with(args: list[str], **popen: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taxipipe.cli", *args], capture_output=True, text=True,
                          env=child_env(), timeout=600, **popen)


@pytest.mark.parametrize("size_kb", [600, 2600, 3800, 6000, 10400])
@pytest.mark.slow
def test_full_disk_at_any_step_is_one_sentence(tmp_path: Path, tlc_server: TlcServer, size_kb: int) -> None:
    home = tmp_path / "home"
    with small_disk(home, size_kb) as popen:
        result = run_with(["run", *cli_data_flags(home, tlc_server)], **popen)
        line = one_sentence_failure(result)
        assert "no room to write" in line, line
        assert not list(home.rglob(".*.part*")), "a half-written file was left behind"
        assert not (home / "mlflow").exists() or not list((home / "mlflow").glob(".mlflow.db.new*"))


@pytest.mark.slow
def test_read_only_home_is_one_sentence(tmp_path: Path, tlc_server: TlcServer) -> None:
    home = tmp_path / "home"
    with read_only(home):
        for command in (["run"], ["make"], ["make", "--clean"]):
            line = one_sentence_failure(run_with([*command, *cli_data_flags(home, tlc_server)]), str(home))
            assert "cannot be written" in line, line


@pytest.mark.slow
def test_sqlite_store_in_a_read_only_place_is_one_sentence(home: Path, tmp_path: Path,
                                                          tlc_server: TlcServer) -> None:
    locked = tmp_path / "locked"
    with read_only(locked):
        uri = f"sqlite:///{locked / 'store' / 'mlflow.db'}"
        result = run_with(["run", *cli_data_flags(home, tlc_server), "--tracking-uri", uri])
        line = one_sentence_failure(result, str(locked / "store" / "mlflow.db"), "mlflow.tracking_uri")
        assert "cannot be written" in line, line


@pytest.mark.slow
def test_corrupt_store_is_one_sentence_and_kept(home: Path, tlc_server: TlcServer) -> None:
    store = home / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"not sqlite at all " * 500)
    for command in (["run"], ["compare"]):
        result = run_with([*command, *cli_data_flags(home, tlc_server)])
        one_sentence_failure(result, str(store), "not a readable SQLite database")
    assert store.read_bytes() == b"not sqlite at all " * 500


def test_store_left_unfinished_by_an_older_version_is_created_again(home: Path) -> None:
    import sqlite3

    store = home / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True)
    with sqlite3.connect(store) as half_made:
        half_made.execute("CREATE TABLE secrets (id INTEGER)")
    opened = subprocess.run([sys.executable, "-c", OPEN_STORE, str(home)], capture_output=True, text=True,
                            env=child_env(), timeout=300)
    assert opened.returncode == 0, opened.stderr[-2000:]
    assert "left unfinished" in opened.stderr


# 7 -- too few rides after the 1..60 minute filter -------------------------------------------

@pytest.mark.slow
def test_month_without_usable_rides_fails_and_leaves_the_cache(home: Path, tlc_server: TlcServer,
                                                              tlc_dir: Path) -> None:
    trips = pq.read_table(tlc_dir / "green_tripdata_2021-01.parquet")
    late = pc.add(trips["lpep_pickup_datetime"], pa.scalar(7_200_000_000, pa.duration("us")))
    long_rides = trips.set_column(trips.schema.get_field_index("lpep_dropoff_datetime"), "lpep_dropoff_datetime",
                                  late.cast(trips.schema.field("lpep_dropoff_datetime").type))
    template = served_folder(tlc_server, "long-rides", {
        "green_tripdata_2021-01.parquet": long_rides,
        "green_tripdata_2021-02.parquet": tlc_dir / "green_tripdata_2021-02.parquet"})
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--url-template", template, env=FAST)
    one_sentence_failure(result, "green 2021-01", "0 of 76,518 rides", "validation.min_rows", "fewer than 1,000")
    assert "transform" in result.stdout
    downloads = home / "downloads"
    assert not (downloads / "green_tripdata_2021-01.parquet").exists()
    assert not (downloads / "green_tripdata_2021-01.parquet.source").exists()
    assert (downloads / "green_tripdata_2021-02.parquet").exists()


# 8 -- artifacts of a custom SQLite store -----------------------------------------------------

@pytest.mark.slow
def test_custom_sqlite_store_keeps_artifacts_beside_it(home: Path, tmp_path: Path, tlc_server: TlcServer) -> None:
    cwd, store = tmp_path / "cwd", tmp_path / "elsewhere" / "custom.db"
    cwd.mkdir()
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--tracking-uri", f"sqlite:///{store}",
                     env=FAST, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(cwd.iterdir()) == [], "nothing is written into the current directory"
    assert list((store.parent / "artifacts").rglob("MLmodel"))
    assert not (home / "mlflow").exists()


# Minor: what a killed run leaves is settled by the next one; file modes ---------------------

@pytest.mark.slow
def test_next_run_settles_what_a_killed_run_left(home: Path, tlc_server: TlcServer) -> None:
    from taxipipe import tracking
    from taxipipe.config import load_settings

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    settings = load_settings(overrides={"home": str(home)})
    client = tracking.client(settings)
    experiment = tracking.experiment_id(settings, client, "simple")
    abandoned = client.create_run(experiment, tags={"runner": "simple", "partition": "green/2021-01",
                                                    "taxipipe.host": os.uname().nodename,
                                                    "taxipipe.pid": str(dead.pid)}).info.run_id
    other_month = client.create_run(experiment, tags={"runner": "simple", "partition": "green/2021-03"}).info.run_id
    client.create_registered_model(MODEL)
    source = client.create_run(experiment).info.run_id
    client.set_terminated(source)
    unaliased = client.create_model_version(MODEL, f"runs:/{source}/model", run_id=source,
                                            tags={tracking.PROMOTION_TAG: tracking.PENDING}).version
    downloads = home / "downloads"
    downloads.mkdir(parents=True)
    stale = downloads / f".green_tripdata_2021-01.parquet.{dead.pid}-abc123.part.parquet"
    older = downloads / ".green_tripdata_2021-02.parquet.q1w2e3.part.parquet"
    live = downloads / f".green_tripdata_2021-05.parquet.{os.getpid()}-xyz.part.parquet"
    for path in (stale, older, live):
        path.write_bytes(b"half")

    result = run_cli("run", *cli_data_flags(home, tlc_server), env=FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    assert client.get_run(abandoned).info.status == "FAILED"
    assert client.get_run(other_month).info.status == "RUNNING", "another partition's run is left alone"
    assert client.get_model_version(MODEL, unaliased).tags[tracking.PROMOTION_TAG] == tracking.INTERRUPTED
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags[tracking.PROMOTION_TAG] == "champion"
    assert not stale.exists() and not older.exists() and live.exists()

    umask = os.umask(0o022)
    os.umask(umask)
    for path in downloads.glob("green_tripdata_*"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    stale.write_bytes(b"half")
    cleaned = run_cli("make", "--clean", *cli_data_flags(home, tlc_server))
    assert cleaned.returncode == 0, cleaned.stderr
    assert not stale.exists() and live.exists()
    assert sorted(path.name for path in downloads.iterdir()) == [live.name]


HOLD_HOME = """
import sys
from pathlib import Path
from taxipipe.safety.home_lock import hold_home

with hold_home(Path(sys.argv[1]), "a test run", wait=False):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_cleanup_waits_for_a_run_holding_the_home(home: Path) -> None:
    """Any runner's cleanup step waits for the run holding the home, and passes in its own."""
    from taxipipe.config import load_settings
    from taxipipe.safety.home_lock import hold_home
    from taxipipe.steps import StepContext, cleanup

    settings = load_settings(overrides={"home": str(home), "artifacts": {"keep_downloads": True}})
    context = StepContext(settings, runner="airflow")
    in_use = context.layout.workdir / "train_clean.parquet"
    in_use.parent.mkdir(parents=True)
    in_use.write_bytes(b"rides")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_HOME, str(home)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        records: list[dict[str, Any]] = []
        cleaner = threading.Thread(target=lambda: records.append(cleanup(context, {})))
        cleaner.start()
        cleaner.join(timeout=2)
        assert cleaner.is_alive() and in_use.exists()
    finally:
        holder.communicate(input="", timeout=30)
    cleaner.join(timeout=30)
    assert not in_use.exists() and records[0]["removed"] == [str(in_use)]
    in_use.parent.mkdir(parents=True)
    in_use.write_bytes(b"rides")
    with hold_home(home, "this test", wait=False):
        assert cleanup(context, {})["removed"] == [str(in_use)]
