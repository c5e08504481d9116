"""The embedded MLflow store: created whole, relocated with its home, one sentence when it is broken."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.faults import (FAST, MODEL, OPEN_STORE, child_env, models, one_sentence_failure, read_only, run_with,
                          start_run)
from tests.helpers import TlcServer, cli_data_flags, run_cli, store_uri, wait_for


# an interrupted first run ------------------------------------------------------------

@pytest.mark.slow
def test_interrupted_first_run_leaves_no_broken_store(tmp_path: Path, tlc_server: TlcServer) -> None:
    """Ctrl-C or a kill while the store is being created: the next run still works."""
    homes = []
    for signum, delay in [(signal.SIGINT, 0.0), (signal.SIGINT, 0.4), (signal.SIGINT, 1.0),
                          (signal.SIGKILL, 0.0), (signal.SIGKILL, 0.4), (signal.SIGKILL, 1.0)]:
        home = tmp_path / f"{signum.name}-after-{delay}s"
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
        homes.append(home)
    opened = subprocess.run([sys.executable, "-c", OPEN_STORE, *map(str, homes)], capture_output=True, text=True,
                            env=child_env(), timeout=600)
    assert opened.returncode == 0, f"the last home opened is broken (the home names the signal): {opened.stderr[-2000:]}"
    again = run_cli("run", *cli_data_flags(homes[-1], tlc_server), env=FAST)
    assert again.returncode == 0, again.stderr[-3000:]


# a moved or copied home -----------------------------------------------------------------

def artifact_files(home: Path) -> set[str]:
    return {path.relative_to(home).as_posix() for path in (home / "mlflow" / "artifacts").rglob("*")}


@pytest.mark.slow
def test_moved_and_copied_homes_keep_working(tmp_path: Path, tlc_server: TlcServer, trained_home: Path) -> None:
    from taxipipe import tracking
    from taxipipe.config import load_settings

    original, copy, moved = tmp_path / "original", tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(trained_home, original)
    tracking.client(load_settings(overrides={"home": str(original)}))  # opened in its place: its home now
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

    store = store_uri(moved)
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")


# a new store: a copy of the cached empty one -------------------------------------------------

def new_store(monkeypatch: pytest.MonkeyPatch, cache: Path, home: Path) -> str:
    """Open the store of a new `home`, caching in `cache`; the default experiment's artifact location."""
    from taxipipe import tracking
    from taxipipe.config import load_settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    settings = load_settings(overrides={"home": str(home)})
    return tracking.client(settings).get_experiment("0").artifact_location


def default_location(home: Path) -> str:
    return (home / "mlflow" / "artifacts" / "0").as_uri()


def test_new_stores_are_copies_of_one_migrated_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    assert new_store(monkeypatch, cache, tmp_path / "first") == default_location(tmp_path / "first")
    [empty] = (cache / "taxipipe" / "mlflow-stores").glob("mlflow-*/mlflow.db")
    made = empty.stat().st_mtime_ns

    assert new_store(monkeypatch, cache, tmp_path / "second") == default_location(tmp_path / "second")
    assert empty.stat().st_mtime_ns == made, "the second store is a copy, not a second migration"
    from mlflow import MlflowClient

    store = store_uri(tmp_path / "second")
    run = MlflowClient(store).create_run("0")
    assert run.info.artifact_uri.startswith((tmp_path / "second" / "mlflow" / "artifacts").as_uri())
    with closing(sqlite3.connect(empty)) as cached:
        assert cached.execute("SELECT count(*) FROM runs").fetchone() == (0,), "the cached store stays empty"

    empty.write_bytes(b"not sqlite at all " * 100)
    assert new_store(monkeypatch, cache, tmp_path / "third") == default_location(tmp_path / "third")
    assert not empty.exists(), "a broken cached store is dropped (the next new store migrates it again)"

    unusable = tmp_path / "a-file"
    unusable.write_text("")
    assert new_store(monkeypatch, unusable, tmp_path / "fourth") == default_location(tmp_path / "fourth")


# a store that cannot be used -------------------------------------------------------------------

@pytest.mark.slow
def test_sqlite_store_in_a_read_only_place_is_one_sentence(home: Path, tmp_path: Path,
                                                          tlc_server: TlcServer) -> None:
    locked = tmp_path / "locked"
    with read_only(locked):
        uri = store_uri(locked, "store/mlflow.db")
        result = run_with(["run", *cli_data_flags(home, tlc_server), "--tracking-uri", uri])
        line = one_sentence_failure(result, str(locked / "store" / "mlflow.db"), "mlflow.tracking_uri")
        assert "cannot be written" in line, line


@pytest.mark.slow
def test_corrupt_store_is_one_sentence_and_kept(home: Path, tlc_server: TlcServer) -> None:
    store = home / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"not sqlite at all " * 500)
    for command in (["run", *cli_data_flags(home, tlc_server)], ["compare", "--home", str(home)]):
        result = run_with(command)
        one_sentence_failure(result, str(store), "not a readable SQLite database")
    assert store.read_bytes() == b"not sqlite at all " * 500


def test_store_left_unfinished_by_an_older_version_is_created_again(home: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    store = home / "mlflow" / "mlflow.db"
    store.parent.mkdir(parents=True)
    with sqlite3.connect(store) as half_made:
        half_made.execute("CREATE TABLE secrets (id INTEGER)")
    assert new_store(monkeypatch, tmp_path / "cache", home) == default_location(home)
    assert "left unfinished by an interrupted first run; creating it again" in capsys.readouterr().err


# artifacts of a custom SQLite store -----------------------------------------------------

@pytest.mark.slow
def test_custom_sqlite_store_keeps_artifacts_beside_it(home: Path, tmp_path: Path, tlc_server: TlcServer) -> None:
    cwd, store = tmp_path / "cwd", tmp_path / "elsewhere" / "custom.db"
    cwd.mkdir()
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--tracking-uri",
                     store_uri(store.parent, store.name), env=FAST, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(cwd.iterdir()) == [], "nothing is written into the current directory"
    assert list((store.parent / "artifacts").rglob("MLmodel"))
    assert not (home / "mlflow").exists()


