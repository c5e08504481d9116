"""The embedded MLflow store when several processes open it for the first time at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

OPEN_STORE = """
import sys
from taxipipe import tracking
from taxipipe.config import load_settings

settings = load_settings(overrides={"home": sys.argv[1]})
print(tracking.experiment_id(settings, tracking.client(settings), "airflow"))
"""


@pytest.mark.slow
def test_processes_creating_the_store_at_once_all_succeed(tmp_path: Path):
    processes = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(tmp_path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(process.communicate(timeout=300), process.returncode) for process in processes]
    assert [code for _, code in results] == [0] * 4, [err[-500:] for (_, err), _ in results]
    assert len({out.strip() for (out, _), _ in results}) == 1


# the promotion lock: who holds it, and for how long ---------------------------------------

@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """A real SQLite store and registry, shared by the lock tests (each uses a model of its own)."""
    from taxipipe import tracking
    from taxipipe.config import load_settings

    home = tmp_path_factory.mktemp("locks") / "home"
    return tracking.client(load_settings(overrides={"home": str(home)}))


@pytest.fixture(scope="module")
def sleeper() -> Iterator[subprocess.Popen]:
    """A live process of this host that has nothing to do with taxipipe (a reused pid)."""
    process = subprocess.Popen(["sleep", "600"])
    try:
        yield process
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def lock_held_by(registry, model: str, pid: int, acquired_at: str, started: str | None = None) -> str:
    """Create `model`'s promotion lock as a process of this host with `pid` would have."""
    tags = {"taxipipe.host": socket.gethostname(), "taxipipe.pid": str(pid), "owner": "deploy of green 2021-01",
            "acquired_at": acquired_at}
    if started is not None:
        tags["taxipipe.started"] = started
    registry.create_registered_model(f"{model}.promotion-lock", tags=tags)
    return f"{model}.promotion-lock"


def holder_pid(registry, lock: str) -> str:
    return registry.get_registered_model(lock).tags["taxipipe.pid"]


def test_an_old_lock_of_a_live_unrelated_process_of_this_host_is_broken(registry, sleeper, capsys) -> None:
    from taxipipe import champion

    lock = lock_held_by(registry, "old-lock", sleeper.pid, str(time.time() - 2 * champion.PROMOTION_LEASE_SECONDS))
    started = time.monotonic()
    with champion.promotion_lock(registry, "old-lock", "test", wait_seconds=20):
        assert holder_pid(registry, lock) == str(os.getpid())
    assert time.monotonic() - started < 10
    assert f"pid {sleeper.pid} on {socket.gethostname()}" in capsys.readouterr().out
    assert not registry.search_registered_models(f"name = '{lock}'"), "the lock was not released"
    promised = (Path(__file__).parents[1] / "docs" / "champion.md").read_text()
    assert f"older than 10 minutes ({champion.PROMOTION_LEASE_SECONDS:.0f} s" in promised


def test_a_lock_whose_pid_now_names_another_process_is_broken_at_once(registry, sleeper, capsys) -> None:
    from taxipipe import champion

    lock_held_by(registry, "reused-pid", sleeper.pid, str(time.time()), started="1")
    started = time.monotonic()
    with champion.promotion_lock(registry, "reused-pid", "test", wait_seconds=20):
        assert time.monotonic() - started < 10
    assert "is now another process" in capsys.readouterr().out


def test_a_fresh_lock_of_its_live_owner_is_kept(registry, sleeper) -> None:
    from taxipipe import champion
    from taxipipe.errors import TrackingError
    from taxipipe.safety.atomic import process_started

    lock = lock_held_by(registry, "held", sleeper.pid, str(time.time()), started=process_started(str(sleeper.pid)))
    with pytest.raises(TrackingError, match=f"pid {sleeper.pid} .* nothing was promoted"):
        with champion.promotion_lock(registry, "held", "test", wait_seconds=0.5):
            pass
    assert holder_pid(registry, lock) == str(sleeper.pid)


def test_a_lock_without_a_readable_time_is_broken_with_one_message(registry, capsys) -> None:
    from taxipipe import champion

    registry.create_registered_model("garbled.promotion-lock", tags={
        "taxipipe.host": "another-host", "taxipipe.pid": "12", "acquired_at": "yesterday at noon"})
    with champion.promotion_lock(registry, "garbled", "test", wait_seconds=20):
        pass
    [line] = [line for line in capsys.readouterr().out.splitlines() if "garbled" in line]
    assert "'yesterday at noon' is not a time" in line and "breaking it" in line


def test_a_run_whose_pid_now_names_another_process_is_marked_failed(registry, sleeper) -> None:
    """A run of this host is judged by its owner's pid and start; one recorded without a start
    (by an older taxipipe) by its pid alone."""
    from taxipipe import tracking

    experiment = registry.create_experiment("owners")
    tags = {"runner": "simple", "partition": "green/2021-01", "taxipipe.host": socket.gethostname(),
            "taxipipe.pid": str(sleeper.pid)}
    reused = registry.create_run(experiment, tags={**tags, "taxipipe.started": "1"}).info.run_id
    alive = registry.create_run(experiment, tags=tags).info.run_id
    assert tracking.fail_abandoned_runs(registry, experiment, "green/2021-01", "simple") == [reused]
    assert registry.get_run(alive).info.status == "RUNNING"


def test_promotion_settles_pending_versions_by_what_the_alias_shows(registry) -> None:
    """A deploy killed after its alias moved made a champion (then replaced by the new one); one
    killed before did not."""
    from taxipipe import champion, tracking

    registry.create_registered_model("settled")
    after, before, new = (registry.create_model_version("settled", "runs:/0/model", tags={
        champion.PROMOTION_TAG: champion.PENDING}).version for _ in range(3))
    registry.set_registered_model_alias("settled", tracking.CHAMPION, after)
    champion.promote(registry, "settled", new)
    promotion = {version: registry.get_model_version("settled", version).tags[champion.PROMOTION_TAG]
                 for version in (after, before, new)}
    assert promotion == {after: f"{champion.REPLACED} v{new}", before: champion.INTERRUPTED, new: tracking.CHAMPION}
    assert str(tracking.champion_version(registry, "settled").version) == str(new)
