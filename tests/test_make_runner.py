"""The make runner on real months served over HTTP: what reruns, what does not, and why."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests import forked
from tests.helpers import REPO, TlcServer, cli_data_flags, run_cli, start_cli, wait_for

LOCK = Path("state/green/2021-01.lock.json")
RAW_VALIDATION = Path("downloads/green_tripdata_2021-02.parquet")
EXTRACTS = ["extract[2021-01]", "extract[2021-02]"]
DEPLOY_CHAIN = [*EXTRACTS, "validate_data", "transform", "features", "train", "validate_model", "save", "deploy"]
HEAVY = ("pandas", "mlflow", "xgboost", "pyarrow")


class Build:
    """The output of one `taxipipe make` run, read the way a user reads it."""

    def __init__(self, out: str, err: str = "") -> None:
        self.out, self.err = out, err

    @property
    def ran(self) -> list[str]:
        return re.findall(r"🚀 Running task: ([\w\[\]-]+)", self.out)

    @property
    def up_to_date(self) -> list[str]:
        return re.findall(r"Task '([\w\[\]-]+)': Up to date", self.out)

    @property
    def would_run(self) -> dict[str, str]:
        return dict(re.findall(r"🔨 Task '([\w\[\]-]+)' would run: (.*)", self.out))

    @property
    def run_id(self) -> str:
        return re.search(r"🆔 Model run ID: (\w+)", self.out).group(1)


def start(home: Path, server: TlcServer, *args: str) -> forked.Child:
    """`taxipipe make ARGS` in the background (a forked child, tests/forked.py)."""
    return start_cli("make", *args, *cli_data_flags(home, server))


def mlflow_runs(home: Path) -> int:
    with sqlite3.connect(home / "mlflow" / "mlflow.db") as db:
        return db.execute("select count(*) from runs").fetchone()[0]


def lock(home: Path) -> dict[str, Any]:
    return json.loads((home / LOCK).read_text())


def running(home: Path, step: str) -> bool:
    try:
        return step in lock(home)["running"]
    except (FileNotFoundError, ValueError):
        return False


@pytest.fixture
def make(home: Path, tlc_server: TlcServer) -> Callable[..., Build]:
    """Run `taxipipe make ARGS` on the test's home; fail the test on a non-zero exit."""

    def run(*args: str, ok: bool = True) -> Build:
        result = run_cli("make", *args, *cli_data_flags(home, tlc_server))
        assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return Build(result.stdout, result.stderr)

    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tlc_server: TlcServer) -> tuple[Path, Build]:
    """A home in which `taxipipe make deploy` built green 2021-01 once."""
    home = tmp_path_factory.mktemp("built") / "home"
    result = run_cli("make", *cli_data_flags(home, tlc_server))
    assert result.returncode == 0, result.stderr
    return home, Build(result.stdout)


@pytest.fixture
def built_home(built: tuple[Path, Build], home: Path) -> Path:
    """A copy of the built home (stat times kept; the MLflow store keeps its artifact directory)."""
    shutil.copytree(built[0], home, copy_function=shutil.copy2)
    return home


def test_list_shows_every_target_and_what_it_depends_on() -> None:
    result = run_cli("make", "--list")
    assert result.returncode == 0
    rows = {line[2:17].strip(): line[18:42].strip() for line in result.stdout.splitlines()[2:]}
    assert rows["extract"] == "-"
    assert rows["save"] == "train, validate_model"
    assert rows["deploy"] == "validate_model, save"
    assert rows["validate"] == "validate_model"
    assert set(DEPLOY_CHAIN[2:]) | {"extract", "cleanup"} <= rows.keys()


def test_unknown_target_is_one_clear_sentence(make: Callable[..., Build]) -> None:
    assert make("deplyo", ok=False).err.strip() == "❌ there is no target 'deplyo'; `taxipipe make --list` shows the targets"


@pytest.mark.slow
def test_first_build_runs_every_step_and_records_them(built: tuple[Path, Build]) -> None:
    home, first = built
    assert first.ran == DEPLOY_CHAIN
    assert "🔨 Force: False" in first.out and "🎯 Target: deploy" in first.out
    state = lock(home)
    assert list(state["steps"]) == DEPLOY_CHAIN and state["running"] == {}
    train = state["steps"]["train"]
    assert train["record"]["run_id"] == first.run_id
    assert train["config"]["model.params.max_depth"] == 6
    assert set(train["inputs"]) == {"partitions/green/2021-01/encoder.json",
                                    "partitions/green/2021-01/train_features.bin",
                                    "partitions/green/2021-01/validation_features.bin"}
    assert set(train["upstream"]) == {"features"}


@pytest.mark.slow
def test_each_steps_record_holds_the_fields_its_type_declares(built: tuple[Path, Build]) -> None:
    from taxipipe import steps

    types = {"validate_data": steps.ValidateDataRecord, "transform": steps.TransformRecord,
             "features": steps.FeaturesRecord, "train": steps.TrainRecord, "validate_model": steps.VerdictRecord,
             "save": steps.SaveRecord, "deploy": steps.DeployRecord, **dict.fromkeys(EXTRACTS, steps.ExtractRecord)}
    for name, entry in lock(built[0])["steps"].items():
        kind, record = types[name], entry["record"]
        assert kind.__required_keys__ <= set(record) <= kind.__required_keys__ | kind.__optional_keys__, name
        assert {"summary", "seconds", "finished_at", "timings"} <= set(record), name
    transform = lock(built[0])["steps"]["transform"]["record"]
    assert set(transform["train"]) == set(transform["validation"]) == steps.CleanRecord.__required_keys__


@pytest.mark.slow
def test_second_deploy_runs_nothing_and_imports_nothing_heavy(built_home: Path, tlc_server: TlcServer) -> None:
    runs = mlflow_runs(built_home)
    trained = lock(built_home)["steps"]["train"]["record"]
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "taxipipe", "make", "deploy",
                             *cli_data_flags(built_home, tlc_server)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    second = Build(result.stdout)
    assert second.ran == [] and second.up_to_date == DEPLOY_CHAIN
    assert second.run_id == trained["run_id"]
    assert f"📊 Final model RMSE: {trained['rmse']:.4f}" in second.out
    assert mlflow_runs(built_home) == runs
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    assert imported.isdisjoint(HEAVY)


@pytest.mark.slow
def test_changing_max_depth_reruns_exactly_train_to_deploy(built_home: Path, make: Callable[..., Build],
                                                           tmp_path: Path) -> None:
    config = tmp_path / "deeper.toml"
    config.write_text("[model.params]\nmax_depth = 3\n")
    before = lock(built_home)["steps"]
    plan = make("--dry-run", "--config", str(config))
    assert plan.out.startswith("🔍 Dry run (make runner): nothing is executed\n") and "Starting" not in plan.out
    assert plan.up_to_date == [*EXTRACTS, "validate_data", "transform", "features"]
    assert plan.would_run["train"] == "config model.params.max_depth changed (6 -> 3)"
    assert plan.would_run["validate_model"] == "upstream 'train' will run"
    assert list(plan.would_run) == ["train", "validate_model", "save", "deploy"]

    rebuilt = make("deploy", "--config", str(config))
    assert rebuilt.ran == ["train", "validate_model", "save", "deploy"]
    assert rebuilt.run_id != before["train"]["record"]["run_id"]
    after = lock(built_home)["steps"]
    assert all(after[name] == before[name] for name in [*EXTRACTS, "validate_data", "transform", "features"])
    assert make("--config", str(config)).ran == []

    (row,) = json.loads(run_cli("compare", "--home", str(built_home), "--json").stdout)["runs"]  # the latest
    assert row["run_id"] == rebuilt.run_id
    assert row["reused_steps"] == ["extract", "validate_data", "transform", "features"]
    assert set(row["step_seconds"]) == {"train", "validate_model", "save", "deploy"}
    assert row["overhead_seconds"] == round(row["wall_seconds"] - row["steps_seconds"], 3) > 0


@pytest.mark.slow
def test_touching_a_raw_file_reruns_nothing(built_home: Path, make: Callable[..., Build]) -> None:
    raw = built_home / RAW_VALIDATION
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 5_000_000_000))
    assert make().ran == []
    recorded = lock(built_home)["steps"]["transform"]["inputs"][RAW_VALIDATION.as_posix()]
    assert recorded["mtime_ns"] == raw.stat().st_mtime_ns, "the new mtime is adopted: no re-hash next time"


@pytest.mark.slow
def test_new_bytes_in_a_raw_file_rerun_the_steps_that_read_it(built_home: Path, make: Callable[..., Build],
                                                              tlc_dir: Path) -> None:
    import pyarrow.parquet as pq

    raw = built_home / RAW_VALIDATION
    pq.write_table(pq.read_table(raw), raw, compression="gzip")
    reencoded = make()
    assert reencoded.ran == ["validate_data", "transform"], reencoded.out
    assert "because input downloads/green_tripdata_2021-02.parquet changed" in reencoded.out
    assert reencoded.up_to_date == [*EXTRACTS, "features", "train", "validate_model", "save", "deploy"], \
        "the same rides give the same clean files, so nothing after transform reruns"

    shutil.copyfile(tlc_dir / "green_tripdata_2021-03.parquet", raw)
    other_month = make()
    assert other_month.ran == DEPLOY_CHAIN[2:]
    assert other_month.up_to_date == EXTRACTS


@pytest.mark.slow
def test_force_rebuilds_the_targets_chain_with_parallel_downloads(built_home: Path,
                                                                  make: Callable[..., Build]) -> None:
    old_run = lock(built_home)["steps"]["train"]["record"]["run_id"]
    forced = make("train", "--force", "-j", "2")
    assert "🔨 Force: True" in forced.out and "🎯 Target: train" in forced.out
    assert forced.ran[2:] == DEPLOY_CHAIN[2:6] and sorted(forced.ran[:2]) == EXTRACTS
    assert forced.out.count("because --force") == 6
    assert forced.run_id != old_run
    plan = make("deploy", "--dry-run")
    assert plan.up_to_date == DEPLOY_CHAIN[:6]
    assert plan.would_run["validate_model"] == "upstream 'train' changed since it last ran"


@pytest.mark.slow
def test_clean_removes_the_partitions_files_and_state_but_not_mlflow(built_home: Path,
                                                                     make: Callable[..., Build]) -> None:
    runs = mlflow_runs(built_home)
    cleaned = make("--clean")
    assert cleaned.ran == []
    for removed in [LOCK, RAW_VALIDATION, Path("partitions/green/2021-01/model.bin"),
                    Path("deployments/green_2021-01.json")]:
        assert f"   removed {removed.as_posix()} (" in cleaned.out
        assert not (built_home / removed).exists()
    assert mlflow_runs(built_home) == runs
    assert "🧹 Nothing to remove" in make("--clean").out
    plan = make("--dry-run")
    assert set(plan.would_run.values()) == {"it has never run"}


@pytest.mark.slow
def test_cleanup_removes_intermediates_without_making_the_build_stale(built_home: Path,
                                                                      make: Callable[..., Build],
                                                                      tmp_path: Path) -> None:
    first = make("cleanup")
    assert first.ran == ["cleanup"] and "removed 6 file(s)" in first.out
    assert not (built_home / "partitions/green/2021-01/model.bin").exists()
    assert make("cleanup").ran == []
    assert make("deploy").ran == []

    config = tmp_path / "deeper.toml"
    config.write_text("[model.params]\nmax_depth = 3\n")
    plan = make("--dry-run", "--config", str(config))
    assert plan.would_run["transform"] == "'features' needs the outputs that 'cleanup' removed"
    assert plan.would_run["features"] == "'train' needs the outputs that 'cleanup' removed"
    assert plan.up_to_date == [*EXTRACTS, "validate_data"]


@pytest.mark.slow
def test_validate_target_and_the_example_script(built_home: Path, tlc_server: TlcServer) -> None:
    result = forked.run_script(REPO / "examples" / "make_pipeline.py",
                               ["validate", *cli_data_flags(built_home, tlc_server)], dict(os.environ))
    assert result.returncode == 0, result.stderr
    validated = Build(result.stdout)
    assert "🎯 Target: validate" in validated.out
    assert validated.up_to_date == DEPLOY_CHAIN[:7]


def test_a_failed_step_records_nothing(make: Callable[..., Build], home: Path, tlc_server: TlcServer) -> None:
    tlc_server.fail_next("green_tripdata_2021-02.parquet", 404)
    failed = make("extract[2021-02]", ok=False)
    assert "❌ Task 'extract[2021-02]' failed: there is no TLC file at" in failed.out
    assert lock(home)["steps"] == {} and lock(home)["running"] == {}


@pytest.mark.slow
def test_sigkill_mid_train_then_a_rerun_redoes_only_train_onward(home: Path, tlc_server: TlcServer,
                                                                 make: Callable[..., Build]) -> None:
    killed = start(home, tlc_server)
    wait_for(lambda: running(home, "train"), "train starts")
    time.sleep(0.5)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    state = lock(home)
    assert list(state["steps"]) == [*EXTRACTS, "validate_data", "transform", "features"]

    rerun = make()
    assert rerun.up_to_date == [*EXTRACTS, "validate_data", "transform", "features"]
    assert rerun.ran == ["train", "validate_model", "save", "deploy"]
    assert re.search(r"because it was interrupted \(started [0-9T:+-]+\)", rerun.out)


@pytest.mark.slow
def test_concurrent_runs_wait_for_each_other(built_home: Path, tlc_server: TlcServer,
                                             make: Callable[..., Build], tmp_path: Path) -> None:
    config = tmp_path / "deeper.toml"
    config.write_text("[model.params]\nmax_depth = 3\n")
    runs = mlflow_runs(built_home)
    first = start(built_home, tlc_server, "--config", str(config))
    wait_for(lambda: running(built_home, "train"), "the first run trains")

    impatient = make("--no-wait", ok=False)
    assert "another taxipipe run (pid " in impatient.err
    second = start(built_home, tlc_server, "--config", str(config))
    first_out, _ = first.communicate(timeout=300)
    second_out, _ = second.communicate(timeout=300)
    assert first.returncode == second.returncode == 0
    assert Build(first_out).ran == ["train", "validate_model", "save", "deploy"]
    waited = Build(second_out)
    assert "⏳ Waiting for another taxipipe run (pid " in waited.out
    assert waited.ran == [] and waited.up_to_date == DEPLOY_CHAIN
    assert mlflow_runs(built_home) == runs + 1


@pytest.mark.slow
def test_months_are_separate_partitions(built_home: Path, make: Callable[..., Build], home: Path,
                                        tlc_server: TlcServer) -> None:
    february = run_cli("make", "features", *cli_data_flags(home, tlc_server, month=2))
    assert february.returncode == 0, february.stderr
    assert (home / "state/green/2021-02.lock.json").is_file()
    assert make("--dry-run").would_run == {}


def test_code_fingerprint_follows_the_step_and_its_helpers(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from taxipipe.hashing import code_fingerprint

    monkeypatch.syspath_prepend(str(tmp_path))
    versions: list[str] = []

    def fingerprints(helper_body: str, other_body: str) -> tuple[str, str]:
        name = f"steps_v{len(versions)}"
        versions.append(name)
        (tmp_path / f"{name}.py").write_text(
            f"def _helper():\n    return {helper_body}\n\n\n"
            "def step(ctx, upstream):\n    return [_helper() for _ in range(1)]\n\n\n"
            f"def other(ctx, upstream):\n    return {other_body}\n")
        module = importlib.import_module(name)
        return code_fingerprint(module.step), code_fingerprint(module.other)

    step, other = fingerprints("1", "2")
    assert fingerprints("1", "3")[0] == step, "editing another step leaves this one alone"
    assert fingerprints("5", "2")[0] != step, "a helper called from a comprehension counts"
    assert fingerprints("1", "2") == (step, other)
