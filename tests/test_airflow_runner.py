"""The Airflow runner: the real DAG under real Airflow 3, run with `airflow dags test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from taxipipe.errors import ConfigError
from taxipipe.partition import Partition
from taxipipe.pipeline import STEPS, edges
from taxipipe.runners.airflow.adapter import DAG_ID, logical_date_for, settings_for, training_partition
from tests.helpers import REPO, store_uri

DAGS_FOLDER = REPO / "dags"
HEAVY_MODULES = ("pandas", "pyarrow", "mlflow", "xgboost", "sklearn")

DESCRIBE_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get(sys.argv[2])
print(json.dumps({
    "import_errors": bag.import_errors,
    "parse_seconds": sum(stat.duration.total_seconds() for stat in bag.dagbag_stats),
    "heavy_modules": [name for name in sys.argv[3:] if name in sys.modules],
    "schedule": str(dag.schedule),
    "catchup": dag.catchup,
    "params": sorted(dag.params),
    "tasks": {
        task.task_id: {
            "downstream": sorted(task.downstream_task_ids),
            "retries": task.retries,
            "backoff": task.retry_exponential_backoff,
            "max_retry_delay": task.max_retry_delay.total_seconds(),
            "fail_fast": [rule.serialize()["exception"] for rule in task.retry_policy.rules],
        }
        for task in dag.tasks
    },
}))
"""


def airflow_environment(airflow_home: Path) -> dict[str, str]:
    """An Airflow home with the project's DAGs, no examples, retry delays of about a second."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "AIRFLOW"))}
    env.update({
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
    })
    return env


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One migrated Airflow home for the module (what running the DAG needs)."""
    env = airflow_environment(tmp_path_factory.mktemp("airflow-home"))
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    return env


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True,
                          text=True, timeout=600)


def dags_test(env: dict[str, str], conf: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return airflow(env, "dags", "test", DAG_ID, *args, "-c", json.dumps(conf))


def conf_for(home: Path, server: Any, data: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    """DAG run conf: a fresh home and the test server (plus `data` settings), and params."""
    settings = {"home": str(home), "data": {"url_template": server.url_template,
                                            "download_backoff_seconds": 0.01, **(data or {})}}
    return {"settings": settings, **params}


def mlflow_runs(home: Path) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(store_uri(home))
    experiment = client.get_experiment_by_name("airflow-taxi-duration")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


# --- the months of a run, without Airflow ------------------------------------------------


@pytest.mark.parametrize(("logical_date", "expected"), [
    (datetime(2021, 5, 1, tzinfo=timezone.utc), Partition("green", 2021, 1)),
    (datetime(2021, 4, 1, tzinfo=timezone.utc), Partition("green", 2020, 12)),
    (datetime(2021, 3, 15, tzinfo=timezone.utc), Partition("green", 2020, 11)),
])
def test_a_run_validates_on_the_month_three_before_its_logical_date(logical_date: datetime, expected: Partition):
    assert training_partition(logical_date) == expected
    assert logical_date_for(expected) == logical_date.replace(day=1)


def test_params_override_the_logical_date_and_settings(tmp_path: Path):
    march = datetime(2021, 5, 1, tzinfo=timezone.utc)
    by_date = settings_for({"settings": {"home": str(tmp_path)}}, march)
    assert (by_date.data.year, by_date.data.month, by_date.home) == (2021, 1, tmp_path)
    nested = settings_for({"settings": {"data": {"month": 4}, "model": {"preset": "zoomcamp"}}}, march)
    assert (nested.data.year, nested.data.month, nested.model.params.max_depth) == (2021, 4, 30)
    explicit = settings_for({"year": 2022, "month": 2, "color": "yellow",
                             "settings": {"data": {"month": 4}}}, march)
    assert explicit.partition == Partition("yellow", 2022, 2)
    with pytest.raises(ConfigError, match="unknown key 'data.colour'"):
        settings_for({"settings": {"data": {"colour": "green"}}}, march)


# --- the DAG -----------------------------------------------------------------------------


def test_the_dag_loads_with_the_pipeline_graph_and_retries(tmp_path: Path):
    result = subprocess.run([sys.executable, "-c", DESCRIBE_DAG, str(DAGS_FOLDER), DAG_ID, *HEAVY_MODULES],
                            env=airflow_environment(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, output(result)
    dag = json.loads(result.stdout.strip().splitlines()[-1])
    assert dag["import_errors"] == {}
    assert dag["heavy_modules"] == [], "the DAG file must not import heavy libraries at parse time"
    print(f"DAG parse time: {dag['parse_seconds']:.3f}s")

    tasks = dag["tasks"]
    upstream: dict[str, set[str]] = {name: set() for name in tasks}
    for name, task in tasks.items():
        for down in task["downstream"]:
            upstream[down].add(name)
    # extract is mapped over the output of `months` (the months a run reads come from its settings)
    assert upstream.pop("months") == set() and tasks["months"]["downstream"] == ["extract"]
    upstream["extract"].remove("months")
    assert upstream == edges(), "the DAG's tasks and dependencies must be the graph's"
    assert dag["schedule"] == "@monthly" and dag["catchup"] is False
    assert dag["params"] == ["color", "month", "settings", "year"]
    for task in tasks.values():
        assert task["backoff"] == 2.0 and task["max_retry_delay"] == 1800
        assert "taxipipe.errors.DataNotFoundError" in task["fail_fast"][0]
    assert tasks["extract"]["retries"] > tasks["validate_data"]["retries"] > tasks["train"]["retries"] >= 1


def test_a_task_prints_its_line_as_its_step_ends(make_settings, capsys: pytest.CaptureFixture[str]):
    """Piped output keeps its order: each task prints its line when its step ends, so training
    progress on stderr is not printed before every task line (as when the example printed them
    after the run)."""
    from taxipipe.pipeline import month_node
    from taxipipe.runners.airflow.adapter import run_node
    from taxipipe.steps import StepContext

    run_node(month_node("extract", Partition("green", 2021, 1)), {}, StepContext(make_settings()))
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "   green/2021-01 downloaded (1,333,519 bytes)"
    assert lines[-1].startswith("✅ Task 'extract[2021-01]' completed in "), lines


@pytest.mark.slow
def test_a_503_heals_on_its_retry_and_a_missing_month_fails_the_run_at_once(airflow_env: dict[str, str],
                                                                             tlc_server: Any, tmp_path: Path):
    """Training on 2021-05, whose download answers 503 once, validated on 2021-06, which the TLC
    does not have: the training month's extract succeeds on its retry, the validation month's
    fails without one, and the run fails with the reason."""
    served, missing = "green_tripdata_2021-05.parquet", "green_tripdata_2021-06.parquet"
    before = {name: tlc_server.hits(name) for name in (served, missing)}
    tlc_server.fail_next(served, 503)
    result = dags_test(airflow_env, conf_for(tmp_path / "home", tlc_server, {"download_retries": 0},
                                             year=2021, month=5))
    assert result.returncode != 0
    log = output(result)
    assert tlc_server.hits(served) - before[served] == 2
    assert "HTTP 503" in log and "new_state=up_for_retry" in log
    assert (tmp_path / "home" / "downloads" / served).is_file()
    assert "✅ Task 'extract[2021-05]' completed in " in log, "a task prints its line as it ends"
    assert tlc_server.hits(missing) - before[missing] == 1
    assert "DagRun failed" in log
    assert "there is no TLC file" in log and "HTTP 404" in log
    assert "does not heal by retrying" in log


@pytest.mark.slow
def test_a_logical_date_trains_its_partition_and_a_backfill_plans_one_run_a_month(
        airflow_env: dict[str, str], tlc_server: Any, tmp_path: Path, simple_rmse: float):
    """One `dags test` here; two logical dates training two partitions under a scheduler is the
    stack's backfill (tests/test_stack.py)."""
    home = tmp_path / "home"
    result = dags_test(airflow_env, conf_for(home, tlc_server), "2021-05-01")
    assert result.returncode == 0, output(result)[-5000:]

    [run] = mlflow_runs(home)
    assert run.data.tags["partition"] == "green/2021-01" and run.data.tags["validation_partition"] == "green/2021-02"
    assert run.data.metrics["rmse"] == pytest.approx(simple_rmse, abs=1e-6)
    assert run.data.tags["airflow.run_id"].startswith("manual__")
    assert run.data.tags["airflow.try_number"] == "1"
    assert set(run.data.metrics) >= {f"step_seconds.{step.name}" for step in STEPS[:5]}
    assert [p.name for p in (home / "deployments").iterdir()] == ["green_2021-01.json"]
    deployed = json.loads((home / "deployments" / "green_2021-01.json").read_text())
    assert deployed["runner"] == "airflow" and deployed["champion"] is True

    plan = airflow(airflow_env, "backfill", "create", "--dag-id", DAG_ID, "--from-date", "2021-05-01",
                   "--to-date", "2021-06-01", "--dry-run")
    assert plan.returncode == 0, output(plan)
    assert "2021-05-01 00:00:00+00:00" in plan.stdout and "2021-06-01 00:00:00+00:00" in plan.stdout


# --- the in-process example (its run is part of the engines' sweep, tests/test_run_examples.py) ---


def run_example(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def test_the_example_says_how_to_install_airflow_when_it_is_missing(tmp_path: Path):
    code = ("import runpy, sys; sys.modules['airflow'] = None; sys.argv = ['airflow_pipeline.py', "
            f"'--home', {str(tmp_path)!r}]; runpy.run_path('examples/airflow_pipeline.py', run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "AIRFLOW"))}
    result = run_example("-c", code, env=env)
    assert result.returncode == 1
    assert "make env" in result.stderr and "uv sync --extra airflow" in result.stderr
