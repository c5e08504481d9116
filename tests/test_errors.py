"""Bad input: one clear sentence, a non-zero exit, no traceback, nothing left to trust."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import TlcServer, cli_data_flags, free_port, run_cli, wait_for

FAST_RETRIES = {"TAXIPIPE_DATA__DOWNLOAD_BACKOFF_SECONDS": "0.01"}


def assert_clean_failure(result, home: Path, *phrases: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    message = result.stdout + result.stderr
    for phrase in phrases:
        assert phrase in message
    downloads = home / "downloads"
    leftovers = [p.name for p in downloads.iterdir()] if downloads.exists() else []
    assert not [name for name in leftovers if ".part" in name]
    assert not (home / "partitions").exists() or not any((home / "partitions").rglob("*.parquet"))


def crafted_template(server: TlcServer, folder: str) -> str:
    return f"http://127.0.0.1:{server.port}/{folder}/{{color}}_tripdata_{{year}}-{{month:02d}}.parquet"


def test_month_that_does_not_exist(home: Path, tlc_server: TlcServer) -> None:
    result = run_cli("run", *cli_data_flags(home, tlc_server, year=2030, month=1), env=FAST_RETRIES)
    assert_clean_failure(result, home, "❌", "HTTP 404", "green_tripdata_2030-01.parquet")
    assert not (home / "downloads").exists() or not list((home / "downloads").iterdir())


def test_refused_connection(home: Path) -> None:
    port = free_port()
    template = f"http://127.0.0.1:{port}/{{color}}_tripdata_{{year}}-{{month:02d}}.parquet"
    result = run_cli("run", "--home", str(home), "--url-template", template, env=FAST_RETRIES)
    assert_clean_failure(result, home, "unreachable", "url_template")


def test_truncated_parquet(home: Path, tlc_server: TlcServer, tlc_dir: Path) -> None:
    folder = tlc_server.root / "truncated"
    folder.mkdir(exist_ok=True)
    data = (tlc_dir / "green_tripdata_2021-01.parquet").read_bytes()
    (folder / "green_tripdata_2021-01.parquet").write_bytes(data[: len(data) - 5000])
    result = run_cli("run", "--home", str(home), "--year", "2021", "--month", "1",
                     "--url-template", crafted_template(tlc_server, "truncated"), env=FAST_RETRIES)
    assert_clean_failure(result, home, "not a readable parquet file")
    assert not (home / "downloads" / "green_tripdata_2021-01.parquet").exists()


@pytest.mark.parametrize("dropped", ["PULocationID", "lpep_dropoff_datetime"])
def test_missing_required_column(home: Path, tlc_server: TlcServer, tlc_dir: Path, dropped: str) -> None:
    folder = tlc_server.root / f"without-{dropped}"
    folder.mkdir(exist_ok=True)
    for label in ("2021-01", "2021-02"):
        table = pq.read_table(tlc_dir / f"green_tripdata_{label}.parquet")
        pq.write_table(table.drop_columns([dropped]), folder / f"green_tripdata_{label}.parquet")
    result = run_cli("run", "--home", str(home), "--year", "2021", "--month", "1",
                     "--url-template", crafted_template(tlc_server, f"without-{dropped}"), env=FAST_RETRIES)
    assert_clean_failure(result, home, "❌ Task 'validate_data' failed", f"lacks required column(s) {dropped}")
    assert not (home / "downloads" / "green_tripdata_2021-01.parquet").exists()


def test_invalid_config_file(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "taxipipe.toml"
    config.write_text("[data]\nmonth = 2\ncolour = 'green'\n")
    result = run_cli("run", "--home", str(home), "--config", str(config))
    assert_clean_failure(result, home, "unknown key 'data.colour'")
    assert not home.exists()


def test_an_out_of_range_flag_value_is_one_sentence(home: Path) -> None:
    result = run_cli("run", "--home", str(home), "--month", "13")
    assert_clean_failure(result, home, "'data.month'", "less than or equal to 12")


def test_sigterm_during_download_leaves_no_partial_file(home: Path, tlc_server: TlcServer, tmp_path: Path) -> None:
    import http.server
    import subprocess
    import threading
    import time

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            for _ in range(200):
                try:
                    self.wfile.write(b"x" * 1000)
                except OSError:
                    return
                time.sleep(0.05)

        def log_message(self, *args) -> None:
            pass

    slow = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    template = f"http://127.0.0.1:{slow.server_address[1]}/{{color}}_tripdata_{{year}}-{{month:02d}}.parquet"
    process = subprocess.Popen([sys.executable, "-m", "taxipipe", "run", "--home", str(home),
                                "--url-template", template], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    downloads = home / "downloads"
    wait_for(lambda: downloads.exists() and any(downloads.iterdir()), "the download starts", 30)
    process.terminate()
    status = process.wait(timeout=300)  # a wait, not a limit: an interrupted run leaves at once
    slow.shutdown()
    errors = process.stderr.read().decode()
    assert status == 143, errors[-3000:]
    assert list(downloads.iterdir()) == [], errors[-3000:]


def test_unreachable_tracking_server_fails_before_the_data_steps(home: Path, tlc_server: TlcServer) -> None:
    port = free_port()
    for command in ("run", "make"):
        result = run_cli(command, *cli_data_flags(home, tlc_server), "--tracking-uri", f"http://127.0.0.1:{port}",
                         timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and "Running task" not in result.stdout
        errors = [line for line in result.stderr.splitlines() if line.startswith("❌")]
        assert len(errors) == 1 and f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}" in errors[0]
    assert not (home / "downloads").exists()


def test_every_runner_probes_the_tracking_server_at_its_first_step(home: Path, tlc_server: TlcServer) -> None:
    """`run_step` probes once per process, so the engines' first task fails before downloading."""
    from taxipipe.config import load_settings
    from taxipipe.errors import TrackingError
    from taxipipe.pipeline import graph, run_step
    from taxipipe.steps import StepContext

    port = free_port()
    settings = load_settings(overrides={"home": str(home), "mlflow": {"tracking_uri": f"http://127.0.0.1:{port}"},
                                        "data": {"url_template": tlc_server.url_template}})
    first = graph(settings)[0]
    with pytest.raises(TrackingError, match=f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}"):
        run_step(first, StepContext(settings, runner="airflow"), {})
    assert not (home / "downloads").exists()


def test_a_signal_that_python_swallowed_still_stops_the_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                tlc_server: TlcServer,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A SIGTERM handled inside a weakref callback (an import's, say) is lost to Python, which
    would print it as a traceback: the command line's hook keeps it quiet, the download checks again."""
    import signal
    import weakref

    from taxipipe.safety import interrupts
    from taxipipe.tlc import fetch

    monkeypatch.setattr(interrupts, "_SEEN", [])
    monkeypatch.setattr(interrupts, "_unwinding", False)
    monkeypatch.setattr(sys, "unraisablehook", interrupts.ignore_swallowed_signals)

    class ModuleLock:
        pass

    def raise_value_error(_: object) -> None:
        raise ValueError("not a signal")

    lock, other = ModuleLock(), ModuleLock()
    released = weakref.ref(lock, lambda _: interrupts.raise_terminated(signal.SIGTERM, None))
    reported = weakref.ref(other, raise_value_error)
    del lock
    assert released() is None and capsys.readouterr().err == "", "the callback ran, its exception swallowed quietly"
    del other
    assert reported() is None and "ValueError: not a signal" in capsys.readouterr().err
    url = tlc_server.url_template.format(color="green", year=2021, month=1)
    with pytest.raises(interrupts.Terminated):
        fetch(url, tmp_path / "downloads" / "green_tripdata_2021-01.parquet")
    assert list((tmp_path / "downloads").iterdir()) == []


@pytest.mark.parametrize("address", ["not-a-url", "tcp://127.0.0.1", "http://127.0.0.1:8786"])
def test_a_bad_dask_scheduler_address_is_refused_before_any_download(home: Path, tlc_server: TlcServer,
                                                                     address: str) -> None:
    asked = len(tlc_server.requests)
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--engine", "dask", "--scheduler", address)
    assert_clean_failure(result, home, f"compute.dask_scheduler '{address}' is not a Dask scheduler address",
                         "tcp://HOST:PORT")
    assert len(tlc_server.requests) == asked, "nothing may be downloaded with a bad setting"
    assert not home.exists()
