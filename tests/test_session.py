"""A run's life (`runners.session`): the home held, each node's line, one sentence on a failure,
the wall time only for a train the run made, and every runner keeping the rules through it."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taxipipe.errors import StepFailed
from taxipipe.partition import Partition
from taxipipe.pipeline import month_node
from taxipipe.runners.session import Session, record_wall_time
from taxipipe.steps import StepContext

REPO = Path(__file__).resolve().parents[1]
TRY_HOME = """
import sys
from pathlib import Path
from taxipipe.errors import BusyError
from taxipipe.safety.home_lock import hold_home

try:
    with hold_home(Path(sys.argv[1]), "another run", wait=False):
        print("free")
except BusyError as exc:
    print(exc)
"""


def other_process_sees(home: Path) -> str:
    """What another process trying to hold `home` at once is told."""
    return subprocess.run([sys.executable, "-c", TRY_HOME, str(home)], capture_output=True, text=True,
                          timeout=120, check=True).stdout.strip()


def test_a_session_holds_the_home_and_prints_each_nodes_line(make_settings, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    context = StepContext(settings, runner="test")
    with Session(settings, "test", hold="a test session") as session:
        session.begin("extract")
        assert "a test session" in other_process_sees(settings.home)
        record = session.run(month_node("extract", Partition("green", 2021, 1)), context)
        with pytest.raises(StepFailed) as failed:
            session.run(month_node("extract", Partition("green", 2030, 1)), context)
        records = session.finish()
    assert other_process_sees(settings.home) == "free"
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["🚀 Starting ML Pipeline (test runner)", "🎯 Target: extract"]
    assert "🚀 Running task: extract[2021-01]" in lines
    assert f"✅ Task 'extract[2021-01]' completed in {record['seconds']:.2f}s" in lines
    assert f"❌ Task 'extract[2030-01]' failed: {failed.value.reason}" in lines and "HTTP 404" in failed.value.reason
    assert lines[-2:-1] == ["🎉 Pipeline completed successfully!"]
    assert list(records) == ["extract[2021-01]"] and session.ran == ["extract[2021-01]"]
    assert not (settings.home / "mlflow").exists(), "a run without train has no wall time to record"


def test_the_wall_time_goes_only_on_a_train_this_run_made(make_settings) -> None:
    from taxipipe import tracking

    settings = make_settings()
    started = time.time()
    reused = {"train": {"run_id": "an-earlier-run", "finished_at": started - 60}}
    assert record_wall_time(settings, reused, started) is None
    assert not (settings.home / "mlflow").exists(), "a run that reused train opens no MLflow store"

    client = tracking.client(settings)
    run_id = client.create_run(tracking.experiment_id(settings, client, "test")).info.run_id
    seconds = record_wall_time(settings, {"train": {"run_id": run_id, "finished_at": time.time()}}, started - 5)
    assert seconds is not None and seconds >= 5
    assert client.get_run(run_id).data.metrics["wall_seconds"] == seconds


#: What docs/runners.md asks of every runner and `Session` does: only it calls these.
SESSION_ONLY = {("console", "task_started"), ("console", "task_done"), ("console", "task_up_to_date"),
                ("console", "task_failed"), ("walltime", "record"), ("tracking", "warm_up"),
                ("tracking", "finish_warm_up")}
ENGINES = ["runners/simple.py", "runners/make", "runners/airflow", "runners/prefect", "runners/dagster"]


def calls(path: Path) -> set[tuple[str, str]]:
    """The `module.function` calls and the names of functions called in a source file, outside
    a `dry_run` (make's, which runs nothing and prints what is up to date)."""
    found: set[tuple[str, str]] = set()
    tree = ast.parse(path.read_text())
    dry = {id(node) for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
           and function.name == "dry_run" for node in ast.walk(function)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and id(node) not in dry:
            function = node.func
            if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name):
                found.add((function.value.id, function.attr))
            elif isinstance(function, ast.Name):
                found.add(("", function.id))
    return found


def test_every_runner_keeps_the_rules_through_the_session() -> None:
    """The runners and examples print a node's line, record the wall time and hold the home only
    through `Session` (make's --clean and the cleanup step hold it themselves), and every engine
    uses it."""
    package = REPO / "src" / "taxipipe"
    sources = [*(package / "runners").rglob("*.py"), *(REPO / "examples").glob("*.py"), *(REPO / "dags").glob("*.py")]
    session = package / "runners" / "session.py"
    for path in sources:
        found = calls(path) if path != session else set()
        assert not found & SESSION_ONLY, f"{path.name} calls {sorted(found & SESSION_ONLY)}: use runners.session"
        if ("", "hold_home") in found:
            assert path == package / "runners" / "make" / "runner.py" and "def clean(" in path.read_text()
    for engine in ENGINES:
        files = [package / engine] if engine.endswith(".py") else list((package / engine).rglob("*.py"))
        assert any("taxipipe.runners.session import" in path.read_text() for path in files), engine
