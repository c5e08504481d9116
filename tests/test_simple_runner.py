"""End to end on real months over HTTP into a fresh home and SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from taxipipe import tracking
from taxipipe.runners.simple import SimplePipeline
from tests.helpers import cli_data_flags, final_rmse, final_run_id, run_cli

pytestmark = pytest.mark.slow

REFERENCE_ONEHOT_RMSE = 6.7145
REFERENCE_ZOOMCAMP_RMSE = 6.6077


def test_cli_run_onehot_matches_reference_and_tracks_everything(home: Path, tlc_server, tlc_dir: Path) -> None:
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--features", "onehot")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["🚀 Starting ML Pipeline (simple runner)", "🎯 Target: cleanup"]
    assert "📅 Data: green 2021-01 (validation 2021-02)" in lines
    for step in ("extract[2021-01]", "extract[2021-02]", "validate_data", "transform", "features", "train",
                 "validate_model", "save", "deploy", "cleanup"):
        assert f"🚀 Running task: {step}" in lines
        assert any(line.startswith(f"✅ Task '{step}' completed in ") for line in lines)
    assert "🎉 Pipeline completed successfully!" in lines
    rmse = final_rmse(result.stdout)
    assert rmse == pytest.approx(REFERENCE_ONEHOT_RMSE, abs=0.005)
    run_id = final_run_id(result.stdout)

    from taxipipe.config import load_settings

    settings = load_settings(overrides={"home": str(home)})
    client = tracking.client(settings)
    run = client.get_run(run_id)
    assert run.data.params["max_depth"] == "6" and run.data.params["feature_mode"] == "onehot"
    assert run.data.metrics["rmse"] == pytest.approx(rmse, abs=1e-4)
    assert run.data.metrics["train_rows"] == 73_908 and run.data.metrics["validation_rows"] == 61_921
    assert {f"step_seconds.{s}" for s in ("extract", "train", "save", "deploy", "cleanup")} <= set(run.data.metrics)
    assert run.data.tags["partition"] == "green/2021-01" and run.data.tags["runner"] == "simple"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "simple-taxi-duration"
    assert experiment.artifact_location.startswith((home / "mlflow" / "artifacts").as_uri())
    artifacts = [a.path for a in client.list_artifacts(run_id, "plots")]
    assert artifacts == ["plots/predicted_vs_actual.png"]

    champion = client.get_model_version_by_alias("nyc-taxi-duration", "champion")
    assert str(champion.version) == "1" and champion.run_id == run_id
    record = json.loads((home / "deployments" / "green_2021-01.json").read_text())
    assert record["champion"] is True and record["version"] == 1 and record["run_id"] == run_id

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model("models:/nyc-taxi-duration@champion")
    rides = pd.read_parquet(tlc_dir / "green_tripdata_2021-02.parquet",
                            columns=["PULocationID", "DOLocationID", "trip_distance"]).head(100)
    predictions = model.predict(rides)
    assert len(predictions) == 100 and 1 < float(predictions.mean()) < 60

    assert not (home / "partitions" / "green" / "2021-01").exists()
    assert (home / "downloads" / "green_tripdata_2021-01.parquet").exists()
    assert not list(Path.cwd().glob("mlruns"))


def test_zoomcamp_preset_matches_reference_and_being_worse_keeps_the_champion(
        make_settings, champion_in_home: Path, simple_rmse: float) -> None:
    """The zoomcamp preset (one-hot features, depth 30) gives the reference's RMSE, worse than the
    categorical champion's: it is registered, and the champion stays where it is."""
    assert simple_rmse <= 6.20, "the champion: categorical features, the defaults"

    worse = SimplePipeline(make_settings(model={"features": "onehot", "preset": "zoomcamp"})).run()
    assert worse["train"]["rmse"] == pytest.approx(REFERENCE_ZOOMCAMP_RMSE, abs=0.005)
    verdict = worse["validate_model"]
    assert verdict["promotable"] is False
    assert verdict["champion_rmse"] == pytest.approx(simple_rmse, abs=1e-6)
    assert "worse than champion v1" in verdict["reason"]
    assert worse["deploy"]["version"] == 2 and worse["deploy"]["champion"] is False

    settings = make_settings()
    champion = tracking.champion_version(tracking.client(settings), settings.mlflow.model_name)
    assert str(champion.version) == "1"


def test_december_is_validated_on_next_january(make_settings, tlc_server, tlc_dir: Path) -> None:
    for name, source in (("green_tripdata_2020-12.parquet", "green_tripdata_2021-01.parquet"),):
        target = tlc_server.root / name
        if not target.exists():
            target.symlink_to(tlc_dir / source)
    settings = make_settings(data={"year": 2020, "month": 12})
    records = SimplePipeline(settings).run()
    assert records["extract[2021-01]"]["partition"] == "green/2021-01"
    assert list(records)[:2] == ["extract[2020-12]", "extract[2021-01]"]
