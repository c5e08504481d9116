"""Shared fixtures: real TLC months, a real HTTP server on 127.0.0.1, a fresh home per test, a
trained champion. Helpers the tests call are in tests/helpers.py."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from taxipipe.config import DEFAULT_URL_TEMPLATE, Settings, load_settings
from tests.helpers import REPO, TEST_MONTHS, TlcServer, free_port, running_ui, store_uri, train_champion


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the modules for parallel workers (`make test` runs `pytest -n 4 --dist loadfile`).

    Each module runs on one worker, so its module fixtures (the stack, a Prefect server, a
    migrated Airflow home) start once. The modules with the most slow tests go first, so the
    long ones overlap instead of ending the run; a module's tests keep their file order.
    """
    slow_tests = Counter(item.module.__name__ for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow_tests[item.module.__name__])


@pytest.fixture(scope="session")
def tlc_dir() -> Path:
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

    store = store_uri(trained_home)
    client = MlflowClient(store, registry_uri=store)  # not the registry an earlier test made current
    run = client.get_run(client.get_model_version("nyc-taxi-duration", "1").run_id)
    assert run.data.tags["runner"] == "simple" and run.data.tags["partition"] == "green/2021-01"
    return run.data.metrics["rmse"]


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    """`taxipipe ui` on a free port, serving the store of its own home; stopped, its output checked."""
    with running_ui(tmp_path) as served:
        yield served
