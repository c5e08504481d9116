"""The training window: month arithmetic, one schema across months, a missing month, logging."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxipipe import compute, tracking
from taxipipe.compute.stream import month_counts, write_clean
from taxipipe.config import load_settings
from taxipipe.errors import ConfigError, StepFailed
from taxipipe.partition import Partition
from taxipipe.runners.simple import SimplePipeline
from taxipipe.window import training_window, window_label
from tests.helpers import run_cli

WINDOW_2023 = {"year": 2023, "month": 3, "train_months": 3}


def test_window_is_the_months_ending_at_the_given_one_across_a_year_end() -> None:
    window = training_window(Partition("green", 2023, 2), 4)
    assert [month.label for month in window] == ["2022-11", "2022-12", "2023-01", "2023-02"]
    assert window_label(window) == "2022-11..2023-02"
    assert window_label(training_window(Partition("green", 2021, 1), 1)) == "2021-01"
    settings = load_settings(overrides={"data": WINDOW_2023})
    assert [month.label for month in settings.training_months] == ["2023-01", "2023-02", "2023-03"]


def test_months_written_with_int64_and_int32_ids_become_one_schema(tlc_dir: Path, tmp_path: Path) -> None:
    january, february = (tlc_dir / f"green_tripdata_2023-0{m}.parquet" for m in (1, 2))
    assert pq.read_schema(january).field("PULocationID").type == pa.int64()
    assert pq.read_schema(february).field("PULocationID").type == pa.int32()
    assert pq.read_schema(january).field("ehail_fee").type == pa.null()

    clean = tmp_path / "train_clean.parquet"
    months = write_clean([("2023-01", january), ("2023-02", february)], "green", clean)

    schema = pq.read_schema(clean)
    assert schema.field("PULocationID").type == pa.int32() and schema.field("DOLocationID").type == pa.int32()
    assert schema.field("trip_distance").type == pa.float64()
    assert list(months) == ["2023-01", "2023-02"]
    assert months["2023-01"]["rows_in"] == pq.ParquetFile(january).metadata.num_rows
    assert months["2023-02"]["rows_in"] == pq.ParquetFile(february).metadata.num_rows
    assert pq.ParquetFile(clean).metadata.num_rows == sum(m["rows"] for m in months.values())
    assert month_counts(clean) == months
    duration = pq.read_table(clean, columns=["duration"])["duration"].to_numpy()
    assert duration.min() >= 1 and duration.max() <= 60


def test_a_window_with_a_month_the_source_lacks_fails_before_training(make_settings, home: Path) -> None:
    settings = make_settings(data={"year": 2023, "month": 2, "train_months": 3})
    with pytest.raises(StepFailed) as failure:
        SimplePipeline(settings).run()
    assert failure.value.step == "extract[2022-12]"
    assert "green 2022-12" in failure.value.reason and "2022-12..2023-02" in failure.value.reason
    assert not (home / "partitions").exists()
    runs = tracking.client(settings).search_runs(
        [e.experiment_id for e in tracking.client(settings).search_experiments()])
    assert runs == []


def test_onehot_is_refused_where_it_cannot_stream(tlc_dir: Path) -> None:
    with pytest.raises(ConfigError, match="categorical features only"):
        compute.check(load_settings(overrides={"compute": {"engine": "dask"}, "model": {"features": "onehot"}}))
    too_small = load_settings(overrides={"compute": {"memory_gb": 0.001}, "model": {"features": "onehot"}})
    months = [tlc_dir / "green_tripdata_2023-01.parquet", tlc_dir / "green_tripdata_2023-02.parquet"]
    with pytest.raises(ConfigError, match="onehot features only train in memory"):
        compute.choose(too_small, months)
    assert compute.choose(load_settings(overrides={"compute": {"memory_gb": 0.001}}), months) == "external"
    assert compute.choose(load_settings(), months) == "memory"


@pytest.mark.slow
def test_window_in_memory_then_in_external_memory_logs_the_window(make_settings, home: Path) -> None:
    in_memory = SimplePipeline(make_settings(data=WINDOW_2023)).run()
    assert in_memory["train"]["compute"] == "memory"
    assert in_memory["train"]["summary"].startswith(
        f"xgboost RMSE {in_memory['train']['rmse']:.4f} on 2023-04, trained on 2023-01..2023-03 (memory; MLflow run ")
    settings = make_settings(data=WINDOW_2023, compute={"memory_gb": 0.001})
    external = SimplePipeline(settings).run()
    assert external["train"]["compute"] == "external"
    assert external["features"]["summary"].endswith("streamed for external")
    # One window of real months fits in one batch per month: the same quantiles, the same trees.
    assert external["train"]["rmse"] == pytest.approx(in_memory["train"]["rmse"], abs=1e-3)

    client = tracking.client(settings)
    run = client.get_run(external["train"]["run_id"])
    params, metrics = run.data.params, run.data.metrics
    assert (params["window_first"], params["window_last"], params["train_months"]) == ("2023-01", "2023-03", "3")
    assert params["compute"] == "external" and run.data.tags["window"] == "green/2023-01..2023-03"
    assert sorted((item.dataset.name, item.tags[0].value) for item in run.inputs.dataset_inputs) == [
        ("green 2023-01", "training"), ("green 2023-02", "training"), ("green 2023-03", "training"),
        ("green 2023-04", "validation")]
    assert run.data.tags["mlflow.note.content"].startswith("xgboost trained on green 2023-01..2023-03 (")
    transformed = external["transform"]["train"]["months"]
    assert {label: metrics[f"train_rows.{label}"] for label in transformed} == {
        label: counts["rows"] for label, counts in transformed.items()}
    assert metrics["train_rows"] == sum(counts["rows"] for counts in transformed.values())
    assert metrics["peak_rss_mb"] > 50 and metrics["peak_rss_mb.cleanup"] >= metrics["peak_rss_mb"]
    assert not (home / "partitions" / "green" / "2023-01..2023-03").exists()
    record = json.loads((home / "deployments" / "green_2023-01..2023-03.json").read_text())
    assert record["run_id"] == external["train"]["run_id"]

    shown = run_cli("compare", "--home", str(home), "--json")
    assert shown.returncode == 0, shown.stderr
    assert {run["partition"] for run in json.loads(shown.stdout)["runs"]} == {"green/2023-01..2023-03"}
