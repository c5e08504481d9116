"""examples/run_examples.sh: the menu through stdin, one item non-interactively."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from taxipipe.compare import display_width
from tests.helpers import REPO, TlcServer, run_cli, run_on_terminal, store_uri

SCRIPT = REPO / "examples" / "run_examples.sh"
#: Lines the engines print by default that are not the run's own: Dagster's event log, Airflow's
#: routed Python warnings (`[warning] Using httpx with starlette.testclient is deprecated`).
LIBRARY_NOISE = (" - dagster - DEBUG - ", "[warning", "Warning:", "DeprecationWarning")


def menu_env(home: Path, server: TlcServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAXIPIPE_")}
    env.update({"TAXIPIPE_HOME": str(home), "TAXIPIPE_DATA__URL_TEMPLATE": server.url_template,
                "TAXIPIPE_DATA__YEAR": "2021", "TAXIPIPE_DATA__MONTH": "1"})
    return env


@pytest.mark.slow
def test_menu_through_stdin(home: Path, tlc_server: TlcServer, tmp_path: Path) -> None:
    """The menu's loop; a runner's item runs on a terminal below, every runner in the sweep."""
    result = subprocess.run(["bash", str(SCRIPT)], input="9\n10\n0\n", capture_output=True, text=True,
                            env=menu_env(home, tlc_server), cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert out.count("Choose [0-10]:") == 3
    assert "✅ Configuration succeeded" in out and "data.year" in out
    # settings whose default depends on the machine show what the code will use, not a blank
    shown = {line.split()[0]: line.split()[2:] for line in out.splitlines()
             if line.startswith(("compute.memory_gb ", "stack.project_dir "))}
    assert shown["stack.project_dir"][0] == str(REPO) and float(shown["compute.memory_gb"][0]) > 0, shown
    assert "✅ all 9 steps work on 5,000-row samples" in out and "✅ Component check succeeded" in out
    assert "👋 Bye" in out


def test_unknown_item_and_failure_report(home: Path, tlc_server: TlcServer, tmp_path: Path) -> None:
    env = menu_env(home, tlc_server)
    unknown = subprocess.run(["bash", str(SCRIPT), "42"], capture_output=True, text=True, env=env, timeout=60)
    assert unknown.returncode == 2 and "Unknown choice" in unknown.stdout
    env["TAXIPIPE_DATA__YEAR"] = "2030"
    env["TAXIPIPE_DATA__DOWNLOAD_RETRIES"] = "0"
    failed = subprocess.run(["bash", str(SCRIPT), "1"], capture_output=True, text=True, env=env, timeout=300,
                            cwd=tmp_path)
    assert failed.returncode == 1
    assert "❌ Simple runner failed at step 'extract[2030-01]'" in failed.stdout


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_run_all_trains_every_runner_on_the_window_and_they_agree(home: Path, tlc_server: TlcServer,
                                                                   tmp_path: Path) -> None:
    """The one sweep of every engine: the menu's "run all" with a model kind other than the
    default, on a window of three months; every runner records the same window and RMSE, and
    the engines keep their state in the taxipipe home, none in the user's."""
    user_home = tmp_path / "user"
    user_home.mkdir()
    env = {**menu_env(home, tlc_server), "HOME": str(user_home), "TAXIPIPE_DATA__YEAR": "2023",
           "TAXIPIPE_DATA__MONTH": "3", "TAXIPIPE_DATA__TRAIN_MONTHS": "3", "TAXIPIPE_MODEL__KIND": "linear",
           "TAXIPIPE_MODEL__FEATURES": "onehot"}
    result = subprocess.run(["bash", str(SCRIPT), "6"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=2300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for runner in ("Simple", "Airflow", "Prefect", "Make-like", "Dagster"):
        assert f"✅ {runner} runner succeeded" in result.stdout
    noise = [line for line in result.stdout.splitlines() if any(sign in line for sign in LIBRARY_NOISE)]
    assert not noise, noise[:5]
    assert "✅ Comparison of the runners succeeded" in result.stdout
    assert "✅ Task 'extract[2023-04]' completed" in result.stdout
    assert result.stdout.count("2023-01..2023-03 (validation 2023-04)") >= 5
    # every runner's header names its target: the whole graph, or make's and Prefect's default deploy
    assert [line for line in result.stdout.splitlines() if line.startswith("🎯 Target: ")] == [
        "🎯 Target: cleanup", "🎯 Target: cleanup", "🎯 Target: deploy", "🎯 Target: deploy", "🎯 Target: cleanup"]
    assert f"{REPO}/docs/engines.md" in result.stdout.splitlines()[-1]

    plot = tmp_path / "runners.png"
    compare = run_cli("compare", "--check", "--json", "--plot", str(plot), env=env)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    runs = json.loads(compare.stdout)["runs"]
    assert {run["runner"] for run in runs} == {"simple", "airflow", "prefect", "make", "dagster"}
    assert {run["kind"] for run in runs} == {"linear"}
    scores = [run["rmse"] for run in runs]
    assert max(scores) - min(scores) <= 1e-6, scores
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for run in runs:  # every runner records the wall time of its whole run, engine start-up included
        assert run["compute"] == "memory"
        assert run["wall_seconds"] > run["steps_seconds"] > 0, run["runner"]
        assert run["overhead_seconds"] == round(run["wall_seconds"] - run["steps_seconds"], 3)

    champion = next(run for run in runs if run["champion"])
    for columns in ("80", "120"):
        text = run_cli("compare", env={**env, "COLUMNS": columns}).stdout
        assert max(display_width(line) for line in text.splitlines()) <= int(columns)
        row = next(line for line in text.splitlines() if "🏆" in line)
        assert row.split()[1] == champion["runner"] and f"{champion['overhead_seconds']:.1f}" in row.split()

    from mlflow import MlflowClient

    client = MlflowClient(store_uri(home))
    runs = client.search_runs([experiment.experiment_id for experiment in client.search_experiments()
                               if experiment.name.endswith("-taxi-duration")])
    for run in runs:
        assert run.data.tags["window"] == "green/2023-01..2023-03", run.data.tags["runner"]
        assert run.data.params["window_first"] == "2023-01" and run.data.params["compute"] == "memory"
        assert {f"step_seconds.{name}" for name in ("extract", "train", "deploy")} <= set(run.data.metrics)
    by_runner = {run.data.tags["runner"]: run for run in runs}
    assert by_runner["airflow"].data.tags["airflow.run_id"].startswith("manual__")
    assert len(by_runner["dagster"].data.tags["dagster.run_id"]) == 36
    assert (home / "airflow" / "airflow.db").is_file()
    assert (home / "dagster" / "dagster.yaml").is_file() and (home / "dagster" / "history").is_dir()
    assert (home / "prefect" / "prefect.db").is_file() and (home / "prefect" / "memo_store.toml").is_file()
    assert not [path for path in (user_home / "airflow", user_home / ".dagster", user_home / ".prefect")
                if path.exists()]
    assert not list(tmp_path.glob("tmp*"))
    downloads = sorted(path.name for path in (home / "downloads").glob("*.parquet"))
    assert downloads == [f"green_tripdata_2023-0{month}.parquet" for month in (1, 2, 3, 4)]


def test_help_lists_the_items_without_an_environment_check() -> None:
    for flag in ("--help", "-h"):
        result = subprocess.run(["bash", str(SCRIPT), flag], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith("Usage: examples/run_examples.sh")
        assert "6) Run all in sequence (then compare)" in result.stdout and "Unknown" not in result.stdout


@pytest.mark.slow
def test_progress_shows_through_the_menu_on_a_terminal(home: Path, tlc_server: TlcServer, tmp_path: Path) -> None:
    """Item 4 (the make-like runner) on a real pseudo-terminal: the boosting line is redrawn there,
    and the log still works."""
    from taxipipe.progress import CLEAR_LINE

    status, text = run_on_terminal(["bash", str(SCRIPT), "4"], env=menu_env(home, tlc_server), cwd=tmp_path)
    assert status == 0, text[-3000:]
    assert f"{CLEAR_LINE}   round " in text and "validation RMSE" in text
    assert "🎉 Pipeline completed successfully!" in text and "✅ Make-like runner succeeded" in text
