"""The Prefect runner: real flow runs on real months served over HTTP, and real deployments.

Each run is the example script in a child process, as a user starts it, against one `prefect
server` for the module (PREFECT_API_URL): a temporary server per run would cost about 15 s of
CPU each. Runs on Prefect's temporary server, a user's default, are the engines' sweep
(tests/test_run_examples.py) and docs/prefect.md's block.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests import forked
from tests.helpers import REPO, TlcServer, cli_data_flags, free_port, run_on_terminal, store_uri, wait_for
from taxipipe.runners.prefect.local import DEPLOYMENT_NAME, MONTHLY_CRON, local_environment
from taxipipe.runners.prefect.services import deployments_applied

EXAMPLE = REPO / "examples" / "prefect_pipeline.py"
BACKFILL_EXAMPLE = REPO / "examples" / "prefect_backfill.py"
PREFECT = Path(sys.executable).with_name("prefect")
STEP_LINE = re.compile(r"Task '([\w\[\]-]+)'(: Up to date| completed| failed)")
OUTCOMES = {": Up to date": "cached", " completed": "ran", " failed": "failed"}
AFTER_FEATURES = ("train", "validate_model", "save", "deploy")
EXTRACTS = ("extract[2021-01]", "extract[2021-02]")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without TAXIPIPE_* and PREFECT_* variables, plus `extra`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "PREFECT_"))}
    environment.update(extra)
    return environment


def run_example(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return forked.run_script(EXAMPLE, list(args), clean_environment(**env))


def outcomes(stdout: str) -> dict[str, str]:
    """Each step's outcome as the console printed it: ran, cached or failed."""
    return {name: OUTCOMES[how] for name, how in STEP_LINE.findall(stdout)}


def task_run_names(server: dict[str, str], **where: dict) -> list[str]:
    """The names of the task runs the Prefect server at `server` holds that match `where`."""
    answer = requests.post(f"{server['PREFECT_API_URL']}/task_runs/filter", json=where, timeout=30)
    answer.raise_for_status()
    return [task_run["name"] for task_run in answer.json()]


def failure_reason(stderr: str) -> str:
    """The one line the example prints when the flow fails, without its marker."""
    [line] = [line for line in stderr.splitlines() if line.startswith("❌ ")]
    return line.removeprefix("❌ ")


def runs_of(home: Path) -> list:
    """The MLflow runs of the Prefect experiment in `home`'s store."""
    from mlflow import MlflowClient

    client = MlflowClient(store_uri(home))
    experiment = client.get_experiment_by_name("prefect-taxi-duration")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_flow_retries_a_503_and_gives_the_simple_runners_rmse(prefect_server: dict[str, str], simple_rmse: float,
                                                              tlc_server: TlcServer, home: Path) -> None:
    name = "green_tripdata_2021-01.parquet"
    before = tlc_server.hits(name)
    tlc_server.fail_next(name, 503)

    # no retries inside the download: the task's retry is what recovers
    result = run_example(*cli_data_flags(home, tlc_server), TAXIPIPE_DATA__DOWNLOAD_RETRIES="0",
                         PREFECT_API_URL=prefect_server["PREFECT_API_URL"])

    assert result.returncode == 0, result.stderr[-3000:]
    assert tlc_server.hits(name) - before == 2
    assert "Retry 1/3 will start" in result.stderr
    assert outcomes(result.stdout) == dict.fromkeys(
        (*EXTRACTS, "validate_data", "transform", "features", *AFTER_FEATURES), "ran")
    [run] = runs_of(home)
    assert run.data.metrics["rmse"] == pytest.approx(simple_rmse, abs=1e-6)
    assert run.data.tags["runner"] == "prefect"
    assert re.fullmatch(r"[0-9a-f-]{36}", run.data.tags["prefect_flow_run_id"])
    # task runs are named as the other runners name the nodes, not `validate_data-fbe`
    assert sorted(task_run_names(prefect_server, flow_runs={"id": {"any_": [run.data.tags["prefect_flow_run_id"]]}})) \
        == sorted((*EXTRACTS, "validate_data", "transform", "features", *AFTER_FEATURES))
    assert f"Final model RMSE: {simple_rmse:.4f}" in result.stdout
    assert any((home / "prefect" / "results").iterdir())


def test_missing_month_fails_at_once_without_retries(prefect_server: dict[str, str], tlc_server: TlcServer,
                                                     home: Path, tmp_path: Path) -> None:
    missing = "green_tripdata_2021-06.parquet"
    before = tlc_server.hits(missing)
    user_home = tmp_path / "user"
    user_home.mkdir()

    result = run_example(*cli_data_flags(home, tlc_server, month=5), HOME=str(user_home),
                         PREFECT_API_URL=prefect_server["PREFECT_API_URL"])

    assert result.returncode == 1
    assert outcomes(result.stdout) == {"extract[2021-05]": "ran", "extract[2021-06]": "failed"}
    assert f"{missing} (HTTP 404)" in result.stderr
    assert failure_reason(result.stderr).endswith("that colour and month is not published")
    assert tlc_server.hits(missing) - before == 1
    assert "Retry" not in result.stderr
    # the failed states Prefect persists land in the home too
    assert any((home / "prefect" / "storage").iterdir())
    assert not (user_home / ".prefect").exists()


def test_failed_data_rules_stop_the_flow_naming_them(prefect_server: dict[str, str], tlc_server: TlcServer,
                                                     home: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    trips = pq.read_table(tlc_server.root / "green_tripdata_2021-01.parquet")
    zones = trips["PULocationID"].to_numpy().copy()
    zones[:50] = 999
    column = trips.schema.get_field_index("PULocationID")
    pq.write_table(trips.set_column(column, "PULocationID", pa.array(zones)),
                   tlc_server.root / "green_tripdata_2031-01.parquet")
    (tlc_server.root / "green_tripdata_2031-02.parquet").symlink_to(
        tlc_server.root / "green_tripdata_2021-02.parquet")

    result = run_example(*cli_data_flags(home, tlc_server, year=2031, month=1),
                         PREFECT_API_URL=prefect_server["PREFECT_API_URL"])

    assert result.returncode == 1
    assert outcomes(result.stdout) == {"extract[2031-01]": "ran", "extract[2031-02]": "ran",
                                       "validate_data": "failed"}
    reason = failure_reason(result.stderr)
    assert reason.startswith("task 'validate_data' failed: data quality rules failed")
    assert "green_tripdata_2031-01.parquet: PULocationID in 1..265: 50 of 76,518 rows" in reason


def test_prefect_on_a_terminal_announces_and_sends_no_usage_data(tmp_path: Path) -> None:
    """Prefect's client shows its telemetry notice on a terminal (first import under a home) unless
    DO_NOT_TRACK is set; outside CI, as a learner runs it."""
    from prefect._internal.analytics.ci_detection import CI_ENV_VARS

    env = {k: v for k, v in clean_environment().items() if k not in CI_ENV_VARS and k != "DO_NOT_TRACK"}
    code = ("import sys; from pathlib import Path; from taxipipe.runners.prefect.local import configure; "
            "configure(Path(sys.argv[1])); import prefect; print('imported')")
    status, output = run_on_terminal([sys.executable, "-c", code, str(tmp_path)], env=env, timeout=120)
    assert status == 0 and output.strip() == "imported", output
    assert not (tmp_path / "prefect" / ".sdk_telemetry").exists()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """`prefect server start` on 127.0.0.1 with its state in a temporary PREFECT_HOME."""
    root = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = clean_environment(**local_environment(root))
    Path(env["PREFECT_HOME"]).mkdir(parents=True)
    log = (root / "server.log").open("w")
    command = [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        assert server.poll() is None, "prefect server exited"
        try:
            return requests.get(f"{api}/health", timeout=2).ok
        except (requests.ConnectionError, requests.Timeout):  # a busy machine answers late
            return False

    try:
        wait_for(healthy, "prefect server answers /health", 120, interval=0.5)
        yield {**env, "PREFECT_API_URL": api}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def prefect_cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([str(PREFECT), *args], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_reruns_resume_at_train_and_reuse_unchanged_steps(prefect_server: dict[str, str],
                                                          tlc_server: TlcServer, home: Path,
                                                          tmp_path: Path) -> None:
    """Five runs on one home, against a running server (PREFECT_API_URL) to save start-ups."""
    server = {"PREFECT_API_URL": prefect_server["PREFECT_API_URL"]}
    flags = cli_data_flags(home, tlc_server)
    blocker = tmp_path / "a-file"
    blocker.touch()

    # the MLflow store cannot be created: train fails after its retry
    failed = run_example(*flags, "--tracking-uri", store_uri(blocker, "mlflow.db"), **server)
    assert failed.returncode == 1
    assert outcomes(failed.stdout) == {**dict.fromkeys(EXTRACTS, "ran"), "validate_data": "ran", "transform": "ran",
                                       "features": "ran", "train": "failed"}

    resumed = run_example(*flags, **server)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert outcomes(resumed.stdout) == {
        **dict.fromkeys(EXTRACTS, "ran"), "validate_data": "cached", "transform": "cached", "features": "cached",
        **dict.fromkeys(AFTER_FEATURES, "ran")}

    unchanged = run_example(*flags, **server)
    assert unchanged.returncode == 0, unchanged.stderr[-3000:]
    assert outcomes(unchanged.stdout) == {**dict.fromkeys(EXTRACTS, "ran"), **dict.fromkeys(
        ("validate_data", "transform", "features", *AFTER_FEATURES), "cached")}
    assert len(runs_of(home)) == 1

    deeper = tmp_path / "deeper.toml"
    deeper.write_text("[model.params]\nmax_depth = 8\n")
    retrained = run_example(*flags, "--config", str(deeper), "--cleanup", **server)
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    assert outcomes(retrained.stdout) == {
        **dict.fromkeys(EXTRACTS, "ran"), "validate_data": "cached", "transform": "cached", "features": "cached",
        **dict.fromkeys((*AFTER_FEATURES, "cleanup"), "ran")}
    latest = runs_of(home)[0]  # newest first: the retrained run counts only the steps it ran
    assert latest.data.tags["taxipipe.reused_steps"] == "validate_data,transform,features"
    assert len(runs_of(home)) == 2
    assert not list(home.glob("partitions/*/*/*"))

    # cleanup removed the intermediates: the cache must not pretend they are still there
    rebuilt = run_example(*flags, "--config", str(deeper), **server)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert outcomes(rebuilt.stdout) == {
        **dict.fromkeys(EXTRACTS, "ran"), "validate_data": "cached", "transform": "ran", "features": "ran",
        **dict.fromkeys(AFTER_FEATURES, "ran")}


def test_deployments_validate_and_apply(prefect_server: dict[str, str]) -> None:
    """`prefect deploy` of prefect.yaml, and the Python deployment applied; a worker runs the
    deployment as its schedule would in tests/test_stack.py."""
    env, api = prefect_server, prefect_server["PREFECT_API_URL"]
    [declared] = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    assert declared["schedules"][0]["cron"] == MONTHLY_CRON

    prefect_cli(env, "work-pool", "create", "taxipipe", "--type", "process")
    assert not deployments_applied(api, REPO)
    prefect_cli(env, "--no-prompt", "deploy", "--all")
    assert deployments_applied(api, REPO)
    deployment = requests.get(f"{api}/deployments/name/ml-pipeline/monthly", timeout=10).json()
    assert deployment["parameters"] == {"latest": True}
    # a stack deployed before the flow moved to runners/prefect/ names the old module: `up` deploys again
    for entrypoint, applied in (("taxipipe.runners.prefect_flow.ml_pipeline", False), (declared["entrypoint"], True)):
        requests.patch(f"{api}/deployments/{deployment['id']}", json={"entrypoint": entrypoint},
                       timeout=10).raise_for_status()
        assert deployments_applied(api, REPO) is applied
    assert deployment["work_pool_name"] == "taxipipe"
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [MONTHLY_CRON]

    served = subprocess.run(
        [sys.executable, "-c", "from taxipipe.runners.prefect.flow import monthly_deployment as d; "
                               "print(d().apply())"],
        capture_output=True, text=True, env=env, timeout=300)
    assert served.returncode == 0, served.stderr[-3000:]
    local = requests.get(f"{api}/deployments/name/ml-pipeline/{DEPLOYMENT_NAME}", timeout=10).json()
    assert local["id"] == served.stdout.split()[-1]
    assert local["entrypoint"] == "taxipipe.runners.prefect.flow.ml_pipeline"
    assert [s["schedule"]["cron"] for s in local["schedules"]] == [MONTHLY_CRON]


def test_a_backfill_trains_two_months_at_once_on_a_two_worker_dask_cluster(prefect_server: dict[str, str],
                                                                          tlc_server: TlcServer, home: Path) -> None:
    """Backfilling months at once: the backfill flow on prefect-dask's DaskTaskRunner, real workers."""
    environment = clean_environment(**local_environment(home), PREFECT_API_URL=prefect_server["PREFECT_API_URL"])
    result = subprocess.run(
        [sys.executable, str(BACKFILL_EXAMPLE), "2023-02", "2023-03", "--workers", "2", "--home", str(home),
         "--url-template", tlc_server.url_template],
        capture_output=True, text=True, env=environment, timeout=800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "DaskTaskRunner" in result.stderr or "dask" in result.stderr.lower()
    lines = [line for line in result.stdout.splitlines() if line.startswith("📊 ")]
    assert [line.split(":")[0] for line in lines] == ["📊 green/2023-02", "📊 green/2023-03"]
    assert "Error logging to API" not in result.stdout + result.stderr

    from mlflow import MlflowClient

    client = MlflowClient(store_uri(home))
    experiment = client.get_experiment_by_name("prefect-taxi-duration")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.tags["partition"] for run in runs) == ["green/2023-02", "green/2023-03"]
    assert {run.data.tags["prefect_task_runner"] for run in runs} == {"dask"}
    months = ["train-month[2023-02]", "train-month[2023-03]"]
    assert sorted(task_run_names(prefect_server, task_runs={"name": {"any_": months}})) == months
    assert all(3 < run.data.metrics["rmse"] < 8 for run in runs)


def test_monitor_flow_retrains_on_drift(prefect_server: dict[str, str], champion_home: Path,
                                       tlc_server: TlcServer) -> None:
    """The flow for real on 2021-02: a tiny PSI limit forces the retrain (trained on 2021-01,
    validated on 2021-02), a tiny RMSE limit keeps the champion where it is."""
    script = """
import json, sys
from pathlib import Path
from taxipipe.runners.prefect.local import configure
configure(Path(sys.argv[1]))
from taxipipe.runners.prefect.monitor import monitor_and_retrain
print(json.dumps(monitor_and_retrain(year=2021, month=2, overrides=json.loads(sys.argv[2]))))
"""
    overrides = {"home": str(champion_home), "data": {"url_template": tlc_server.url_template},
                 "monitor": {"max_feature_psi": 0.0001}, "validation": {"max_rmse": 1.0}}
    env = clean_environment(PREFECT_API_URL=prefect_server["PREFECT_API_URL"])
    result = subprocess.run([sys.executable, "-c", script, str(champion_home), json.dumps(overrides)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["monitor"]["drifted"] and outcome["monitor"]["partition"] == "green/2021-02"
    assert outcome["retrain"]["partition"] == "green/2021-01" and outcome["retrain"]["champion"] is False
    assert "outside the allowed range" in outcome["retrain"]["summary"]
