"""`taxipipe monitor` and the monthly monitor-then-retrain job (Airflow DAG, Prefect flow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taxipipe.config import load_settings
from taxipipe.serve.champion import Loaded
from taxipipe.serve.monitor import clean_rides, numeric_drift, psi, training_data, window_rides, zone_drift
from tests.conftest import REPO, TlcServer, cli_data_flags, run_cli


def test_psi_is_zero_for_equal_distributions_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.exponential(3.0, 50_000)
    assert psi(np.full(4, 0.25), np.full(4, 0.25)) == 0
    assert numeric_drift("d", reference, rng.exponential(3.0, 50_000), 0.2).psi < 0.01
    shifted = numeric_drift("d", reference, rng.exponential(6.0, 50_000), 0.2)
    assert shifted.drifted and shifted.ks > 0.2 and shifted.wasserstein > 2
    zones = rng.integers(1, 266, 50_000)
    assert not zone_drift("z", zones, rng.integers(1, 266, 50_000), 0.2).drifted
    assert zone_drift("z", zones, rng.integers(1, 40, 50_000), 0.2).drifted


def test_the_reference_is_the_champions_whole_training_window(tmp_path: Path, tlc_server: TlcServer) -> None:
    from taxipipe import tracking

    settings = load_settings(overrides={"home": str(tmp_path), "data": {"url_template": tlc_server.url_template}})
    client = tracking.client(settings)
    run_id = client.create_run(client.create_experiment("trained-on-a-window")).info.run_id
    for key, value in {"color": "green", "year": 2021, "month": 3, "train_months": 2}.items():
        client.log_param(run_id, key, value)
    client.log_metric(run_id, "rmse", 6.5)
    window, rmse = training_data(settings, Loaded("m", 1, run_id, "now", None))
    assert [month.label for month in window] == ["2021-02", "2021-03"] and rmse == 6.5
    rides = window_rides(settings, window)
    per_month = [len(clean_rides(settings, month)["duration"]) for month in window]
    assert len(rides["duration"]) == sum(per_month) and min(per_month) > 0


@pytest.mark.slow
def test_monitor_a_month_like_the_training_month(champion_home: Path, tlc_server: TlcServer) -> None:
    from taxipipe import tracking

    result = run_cli("monitor", *cli_data_flags(champion_home, tlc_server, month=2))
    assert result.returncode == 0, result.stderr
    assert "green 2021-02 (61,921 rides) against nyc-taxi-duration v1's training data 2021-01" in result.stdout
    assert "RMSE 6.0507" in result.stdout and "no threshold crossed" in result.stdout
    report = champion_home / "reports" / "monitor_green_2021-02.html"
    page = report.read_text()
    assert "No threshold crossed." in page and page.count("data:image/png;base64,") == 2
    settings = load_settings(overrides={"home": str(champion_home)})
    client = tracking.client(settings)
    [run] = client.search_runs([client.get_experiment_by_name("monitoring").experiment_id],
                               filter_string="params.month = '2'")
    assert run.data.metrics["drifted"] == 0 and run.data.metrics["PULocationID.psi"] < 0.2
    assert run.data.params["model_version"] == "1"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == [report.name]


@pytest.mark.slow
def test_monitor_exits_3_when_a_threshold_is_crossed(champion_home: Path, tlc_server: TlcServer) -> None:
    result = run_cli("monitor", *cli_data_flags(champion_home, tlc_server, year=2023, month=2))
    assert result.returncode == 3, result.stderr
    assert "drift: PULocationID PSI" in result.stdout
    rmse = run_cli("monitor", *cli_data_flags(champion_home, tlc_server, month=3),
                   env={"TAXIPIPE_MONITOR__MAX_RMSE_INCREASE": "0", "TAXIPIPE_MONITOR__MAX_FEATURE_PSI": "5",
                        "TAXIPIPE_MONITOR__MAX_PREDICTION_PSI": "5"})
    assert rmse.returncode == (3 if "above the champion's" in rmse.stdout else 0), rmse.stdout


def test_monitor_without_champion_says_what_to_do(tmp_path: Path, tlc_server: TlcServer) -> None:
    result = run_cli("monitor", *cli_data_flags(tmp_path / "home", tlc_server, month=2))
    assert result.returncode == 1 and "run the pipeline first" in result.stderr


def test_monitor_dag_parses_with_the_job_tasks(tmp_path: Path) -> None:
    describe = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["taxi_monitor_retrain"]
print(json.dumps({"errors": bag.import_errors, "schedule": str(dag.schedule),
                  "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "AIRFLOW"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    result = subprocess.run([sys.executable, "-c", describe, str(REPO / "dags" / "taxi_monitor_retrain.py")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout.strip().splitlines()[-1])
    assert described["errors"] == {} and described["schedule"] == "@monthly"
    assert described["tasks"] == {"monitor": ["drifted"], "drifted": ["retrain"], "retrain": []}


MONITOR_WITHOUT_CHAMPION = """
import json, sys
from datetime import datetime, timezone
from pathlib import Path
from taxipipe.runners.airflow import migrate_once, use_airflow_home
home, dags = Path(sys.argv[1]), Path(sys.argv[2])
use_airflow_home(home / "airflow", dags)
migrate_once(home / "airflow")
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=str(dags)).get_dag("taxi_monitor_retrain")
run = dag.test(logical_date=datetime(2021, 6, 1, tzinfo=timezone.utc), run_conf={"settings": {"home": str(home)}})
print(json.dumps({"state": str(run.state), "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}))
"""


@pytest.mark.slow
def test_the_monitor_dag_skips_with_its_reason_until_there_is_a_champion(tmp_path: Path) -> None:
    """A stack's first scheduled monitor run, before any pipeline run: green, not red."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "AIRFLOW"))}
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"  # the task's log, where the reason is
    result = subprocess.run([sys.executable, "-c", MONITOR_WITHOUT_CHAMPION, str(tmp_path / "home"),
                             str(REPO / "dags")], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"state": "success", "tasks": dict.fromkeys(("monitor", "drifted", "retrain"), "skipped")}
    assert "no champion of nyc-taxi-duration yet: nothing to monitor until a pipeline run promotes one" \
        in result.stdout + result.stderr


@pytest.mark.slow
def test_prefect_monitor_flow_retrains_on_drift(champion_home: Path, tlc_server: TlcServer) -> None:
    """The flow for real on 2021-02: a tiny PSI limit forces the retrain (trained on 2021-01,
    validated on 2021-02), a tiny RMSE limit keeps the champion where it is."""
    script = """
import json, sys
from pathlib import Path
from taxipipe.runners.prefect_local import configure
configure(Path(sys.argv[1]))
from taxipipe.runners.prefect_monitor import monitor_and_retrain
print(json.dumps(monitor_and_retrain(year=2021, month=2, overrides=json.loads(sys.argv[2]))))
"""
    overrides = {"home": str(champion_home), "data": {"url_template": tlc_server.url_template},
                 "monitor": {"max_feature_psi": 0.0001}, "validation": {"max_rmse": 1.0}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "PREFECT_"))}
    result = subprocess.run([sys.executable, "-c", script, str(champion_home), json.dumps(overrides)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["monitor"]["drifted"] and outcome["monitor"]["partition"] == "green/2021-02"
    assert outcome["retrain"]["partition"] == "green/2021-01" and outcome["retrain"]["champion"] is False
    assert "outside the allowed range" in outcome["retrain"]["summary"]
