"""What a real run prints: the seed's lines, no library noise, --json for machines, more under -v."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from taxipipe import tracking
from taxipipe.config import load_settings
from tests.helpers import cli_data_flags, final_run_id, run_cli, train_line

NOISE = ("warning", "Warning", "CloudPickle", "type hints", "Successfully registered", "Created version",
         "Traceback", "mlflow.")


@pytest.mark.slow
def test_a_run_reads_cleanly_and_json_is_one_line_then_verbose_shows_the_rest(
        home: Path, tlc_server, tlc_dir: Path, tmp_path: Path) -> None:
    quiet = run_cli("run", "--json", *cli_data_flags(home, tlc_server))
    assert quiet.returncode == 0, quiet.stderr
    [line] = quiet.stdout.splitlines()
    record = json.loads(line)
    assert record["ok"] is True and record["partition"] == "green/2021-01"
    assert record["rmse"] == pytest.approx(6.0507, abs=0.005)
    assert record["version"] == 1 and record["champion"] is True and record["model_name"] == "nyc-taxi-duration"
    assert set(record["step_seconds"]) >= {"extract", "train", "deploy", "cleanup"}
    assert "🎉 Pipeline completed successfully!" in quiet.stderr and "✅ Task 'train' completed" in quiet.stderr
    assert "🎯 Target: cleanup" in quiet.stderr.splitlines()[:3], "every runner's header names its target"
    assert not [phrase for phrase in NOISE if phrase in quiet.stderr], quiet.stderr
    assert re.fullmatch(rf"xgboost RMSE {record['rmse']:.4f} on 2021-02, trained on 2021-01 "
                        rf"\(memory; MLflow run {record['run_id']}\)", train_line(quiet.stderr))

    client = tracking.client(load_settings(overrides={"home": str(home)}))
    run = client.get_run(record["run_id"])
    tracked_seconds = (run.info.end_time - run.info.start_time) / 1000
    assert tracked_seconds >= 0.5 * record["step_seconds"]["train"], "the MLflow run must span the training"
    assert_run_tells_its_story(client, run, tlc_dir, tlc_server, tmp_path)

    verbose = run_cli("run", "-v", *cli_data_flags(home, tlc_server))
    assert verbose.returncode == 0, verbose.stderr
    assert "   round 10: validation RMSE " in verbose.stderr
    assert "created version 2 of model 'nyc-taxi-duration'" in verbose.stderr
    run_id = final_run_id(verbose.stdout)
    history = client.get_metric_history(run_id, "validation_rmse")
    assert [metric.step for metric in history][:3] == [10, 20, 30]

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model("models:/nyc-taxi-duration@champion")
    rides = pd.read_parquet(tlc_dir / "green_tripdata_2021-02.parquet",
                            columns=["PULocationID", "DOLocationID", "trip_distance"]).head(50)
    as_ints = model.predict(rides.astype({"PULocationID": "int64", "DOLocationID": "int64"}))
    as_floats = model.predict(rides.astype("float64"))
    written = model.predict(pd.DataFrame({"PULocationID": [74.0], "DOLocationID": [75.0], "trip_distance": [2]}))
    assert list(as_ints) == list(as_floats) and 1 < float(written[0]) < 60


def assert_run_tells_its_story(client, run, tlc_dir: Path, tlc_server, tmp_path: Path) -> None:
    """Datasets with source, digest and rows; a description with the verdict; a titled plot."""
    from PIL import Image

    months = {item.dataset.name: item for item in run.inputs.dataset_inputs}
    assert {name: [tag.value for tag in item.tags if tag.key == "mlflow.data.context"]
            for name, item in months.items()} == {"green 2021-01": ["training"], "green 2021-02": ["validation"]}
    for name, item in months.items():
        file_name = f"green_tripdata_{name.split()[1]}.parquet"
        assert item.dataset.digest == hashlib.sha256((tlc_dir / file_name).read_bytes()).hexdigest()[:16]
        assert item.dataset.source_type == "http"
        assert json.loads(item.dataset.source) == {"url": tlc_server.url_template.format(
            color="green", year=2021, month=int(name[-2:]))}
        assert json.loads(item.dataset.profile)["num_rows"] == pq.read_metadata(tlc_dir / file_name).num_rows
        assert {"name": "trip_distance", "type": "double"} in json.loads(item.dataset.schema)["mlflow_colspec"]
    rmse = run.data.metrics["rmse"]
    assert run.data.tags["mlflow.note.content"] == (
        f"xgboost trained on green 2021-01 (73,908 rides), scored on green 2021-02 (61,921 rides): "
        f"RMSE {rmse:.4f}. Compute memory, runner simple.\n\nGate: promotable, no champion yet.")
    plot = client.download_artifacts(run.info.run_id, "plots/predicted_vs_actual.png", str(tmp_path))
    assert Image.open(plot).text["Title"] == f"green 2021-02: xgboost trained on 2021-01, RMSE {rmse:.4f}"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND[0]] == tracking.EXPERIMENT_KIND[1]


def test_a_month_read_from_a_relative_path_is_recorded_by_its_absolute_url(
        make_settings, tlc_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative url_template (`../data/...`) means nothing outside the run's directory: the
    dataset's source is the file's absolute file:// URL."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "data").symlink_to(tlc_dir)
    settings = make_settings(data={"url_template": "../data/{color}_tripdata_{year}-{month:02d}.parquet"})
    downloads = settings.home / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "green_tripdata_2021-01.parquet").symlink_to(tlc_dir / "green_tripdata_2021-01.parquet")
    client = tracking.client(settings)
    run_id = client.create_run(client.create_experiment("sources")).info.run_id

    tracking.log_datasets(client, run_id, settings)

    [month] = client.get_run(run_id).inputs.dataset_inputs
    assert json.loads(month.dataset.source) == {"uri": (tlc_dir / "green_tripdata_2021-01.parquet").resolve().as_uri()}


def test_stdout_and_stderr_keep_their_order_through_one_pipe() -> None:
    """`taxipipe ... 2>&1 | tee`: a library's unflushed stdout line comes out before the stderr
    line written after it (a pipe block-buffers stdout unless it is line-buffered)."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    code = ("import sys; from taxipipe import console; console.configure(); "
            "sys.stdout.write('first\\n'); sys.stderr.write('second\\n'); sys.stdout.write('third\\n')")
    result = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, timeout=60)
    assert result.stdout.splitlines() == ["first", "second", "third"]


def test_quiet_run_failure_still_says_what_went_wrong(home: Path, tlc_server) -> None:
    result = run_cli("run", "-q", "--json", *cli_data_flags(home, tlc_server, year=2030, month=1),
                     env={"TAXIPIPE_DATA__DOWNLOAD_BACKOFF_SECONDS": "0.01"})
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    failure = json.loads(line)
    assert failure["ok"] is False and failure["step"] == "extract[2030-01]" and "HTTP 404" in failure["error"]
    assert result.stderr.splitlines() == [f"❌ Task 'extract[2030-01]' failed: {failure['error']}"]
