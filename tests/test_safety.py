"""Crash safety (taxipipe.safety): signals, one run per home, full and read-only disks, and what
a killed run leaves for the next one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.faults import FAST, MODEL, one_sentence_failure, read_only, run_with, small_disk, start_run
from tests.helpers import TlcServer, cli_data_flags, run_cli, wait_for


@pytest.mark.slow
def test_sigterm_prints_one_line_and_exits_143(home: Path, tlc_server: TlcServer) -> None:
    process = start_run(*cli_data_flags(home, tlc_server))
    wait_for(lambda: (home / "state" / "make.owner").exists(), "the run holds its home")
    process.terminate()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, out + err
    assert err.strip().splitlines()[-1] == "❌ interrupted"


def test_an_interrupted_run_leaves_without_waiting_for_the_store_warm_up(make_settings, monkeypatch) -> None:
    """A signal can leave Python's import lock held, and a warm-up importing MLflow then waits for
    it forever (seen: a SIGTERM during the download hung the run). An interrupted run leaves at
    once; a failed one still waits, so it never leaves while the warm-up writes a new store."""
    from taxipipe import tracking
    from taxipipe.errors import DataNotFoundError, StepFailed
    from taxipipe.runners import session
    from taxipipe.tracking import connection
    from taxipipe.runners.simple import SimplePipeline

    stuck = threading.Event()

    def blocked_warm_up(settings: Any, runner: str) -> None:
        thread = threading.Thread(target=stuck.wait, daemon=True)
        thread.start()
        monkeypatch.setattr(connection, "_warm_up", thread)

    monkeypatch.setattr(tracking, "warm_up", blocked_warm_up)
    outcomes: list[str] = []

    def run_failing_with(error: BaseException) -> threading.Thread:
        pipeline = SimplePipeline(make_settings())

        def fail(*args: Any) -> None:
            raise error

        def run() -> None:
            try:
                pipeline.run()
            except (KeyboardInterrupt, StepFailed) as exc:
                outcomes.append(type(exc.__cause__ or exc).__name__)

        monkeypatch.setattr(session, "run_step", fail)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    interrupted = run_failing_with(KeyboardInterrupt())
    interrupted.join(timeout=120)
    assert outcomes == ["KeyboardInterrupt"], "an interrupted run waited for the warm-up"

    failed = run_failing_with(DataNotFoundError("no such month"))
    failed.join(timeout=1)
    assert failed.is_alive(), "a failed run must wait for the warm-up"
    stuck.set()
    failed.join(timeout=120)
    assert outcomes == ["KeyboardInterrupt", "DataNotFoundError"]


def _signal_sweep(url: str, folder: Path, report: Path) -> None:
    """The forked child of `test_a_sigterm_on_any_line_of_a_download_leaves_no_partial_file`.

    Download `url` again and again as the command line does (its handlers, inside
    `unfinished_writes_removed`); the k-th time, SIGTERM lands at the k-th traced event (a line
    of the download and write code, or a call into tqdm or requests) and again at every event
    after it, until a download ends before its k-th event. Writes what each one left.
    """
    import json
    import signal

    from taxipipe import tlc
    from taxipipe.safety import atomic, interrupts

    watched = (tlc.__file__, os.path.dirname(atomic.__file__))
    libraries = (f"{os.sep}tqdm{os.sep}", f"{os.sep}requests{os.sep}")
    results = []
    for k in range(1, 10_000):
        events, landed = 0, False

        def tracer(frame: Any, event: str, arg: Any) -> Any:
            nonlocal events
            name = frame.f_code.co_filename
            if name.startswith(watched) and event == "line" or event == "call" and any(
                    library in name for library in libraries):
                events += 1
                if events >= k:
                    signal.raise_signal(signal.SIGTERM)
            return tracer if name.startswith(watched) else None

        def rearm(frame: Any, event: str, arg: Any) -> None:
            """A tracer that raises is switched off: switch it on again for the storm."""
            if sys.gettrace() is None and events >= k:
                sys.settrace(tracer)
                while frame is not None:
                    frame.f_trace = tracer if frame.f_code.co_filename.startswith(watched) else frame.f_trace
                    frame = frame.f_back

        target = folder / str(k) / "green_tripdata_2021-01.parquet"
        interrupts.install()
        sys.setprofile(rearm)
        sys.settrace(tracer)
        try:
            with atomic.unfinished_writes_removed():
                tlc.fetch(url, target, retries=0)
        except interrupts.Terminated:
            landed = True
        finally:
            sys.setprofile(None)
            sys.settrace(None)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        left = sorted(path.name for path in folder.rglob(f"*{atomic.PART_MARK}*"))
        results.append({"k": k, "events": events, "landed": landed, "left": left,
                        "whole": target.exists() and tlc.recorded_source(target) == url})
        if not landed:
            break
    report.write_text(json.dumps(results))


def test_a_sigterm_on_any_line_of_a_download_leaves_no_partial_file(tlc_server: TlcServer, tmp_path: Path) -> None:
    """A SIGTERM landing anywhere in a download (the loop, tqdm, requests, the cleanups), and more
    SIGTERMs after it, leave no temporary file (seen: one left by a SIGTERM landing right after the
    file was created, before its cleanup was armed)."""
    import json

    url = tlc_server.url_template.format(color="green", year=2021, month=1)
    report = tmp_path / "report.json"
    child = os.fork()
    if child == 0:
        status = 1
        try:
            _signal_sweep(url, tmp_path / "downloads", report)
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and report.exists()
    results = json.loads(report.read_text())
    *interrupted, complete = results
    assert len(interrupted) > 50 and not complete["landed"] and complete["whole"], complete
    assert all(result["landed"] for result in interrupted)
    assert [result for result in results if result["left"]] == []


# concurrent runs on one home ------------------------------------------------------------

@pytest.mark.slow
def test_concurrent_runs_on_one_home_wait_for_each_other(home: Path, tlc_server: TlcServer) -> None:
    first = start_run(*cli_data_flags(home, tlc_server))
    wait_for(lambda: (home / "state" / "make.owner").exists() or first.poll() is not None, "the first run starts")
    second = start_run(*cli_data_flags(home, tlc_server))
    results = [process.communicate(timeout=600) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [err[-2000:] for _, err in results]
    assert "⏳ Waiting for another taxipipe run (pid " in results[1][0]
    assert "`taxipipe run`, green 2021-01" in results[1][0]


# full and read-only disks ------------------------------------------------------------------------

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


# Minor: what a killed run leaves is settled by the next one; file modes ---------------------

@pytest.mark.slow
def test_next_run_settles_what_a_killed_run_left(home: Path, tlc_server: TlcServer) -> None:
    from taxipipe import tracking
    from taxipipe.champion import INTERRUPTED, PENDING, PROMOTION_TAG
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
                                            tags={PROMOTION_TAG: PENDING}).version
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
    assert client.get_model_version(MODEL, unaliased).tags[PROMOTION_TAG] == INTERRUPTED
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags[PROMOTION_TAG] == "champion"
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

