"""Model kinds, the best boosting round, and the strict champion gate, on real months."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taxipipe import tracking
from taxipipe.config import load_settings
from taxipipe.errors import ConfigError
from taxipipe.features import MODEL_COLUMNS, TARGET, add_duration
from taxipipe.models import KIND_NAMES
from taxipipe.models.base import rmse
from taxipipe.models.registry import KINDS
from taxipipe.runners.simple import SimplePipeline
from taxipipe.tlc import read_trips
from tests.helpers import cli_data_flags, final_rmse, final_run_id, run_cli

#: The course's published LinearRegression figure on green 2021-01 -> 2021-02 (DictVectorizer).
COURSE_LINEAR_RMSE = 7.7587
#: Small XGBoost models: quick to train, and more rounds are better on these months.
QUICK = {"features": "categorical", "params": {"n_estimators": 10}}


def test_every_kind_is_registered_under_its_module_name() -> None:
    assert tuple(KINDS) == KIND_NAMES == ("xgboost", "linear", "random_forest")
    assert KINDS["linear"].feature_modes == ("onehot",) == KINDS["random_forest"].feature_modes
    assert KINDS["xgboost"].feature_modes is None  # every feature set


@pytest.mark.slow
def test_linear_onehot_prints_the_course_figure_and_serves_raw_rides(home: Path, tlc_server, tlc_dir: Path) -> None:
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--model", "linear", "--features", "onehot")
    assert result.returncode == 0, result.stderr
    assert final_rmse(result.stdout) == pytest.approx(COURSE_LINEAR_RMSE, abs=0.001)
    run_id = final_run_id(result.stdout)

    settings = load_settings(overrides={"home": str(home)})
    client = tracking.client(settings)
    run = client.get_run(run_id)
    assert run.data.params["model_kind"] == "linear" and run.data.tags["model_kind"] == "linear"
    assert run.data.params["fit_intercept"] == "True" and "max_depth" not in run.data.params
    version = client.get_model_version_by_alias(settings.mlflow.model_name, "champion")
    assert version.tags["model_kind"] == "linear" and version.tags["verdict"] == "promoted"

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model("models:/nyc-taxi-duration@champion")

    rides = add_duration(read_trips(tlc_dir / "green_tripdata_2021-02.parquet", "green")).to_pandas()
    predicted = model.predict(rides[MODEL_COLUMNS])
    assert rmse(rides[TARGET], predicted) == pytest.approx(run.data.metrics["rmse"], abs=1e-9)
    served = model.unwrap_python_model()
    fast = served.predict_rides(rides["PULocationID"].to_numpy(), rides["DOLocationID"].to_numpy(),
                                rides["trip_distance"].to_numpy())
    assert isinstance(fast, np.ndarray) and np.array_equal(fast, np.asarray(predicted))

    shown = run_cli("compare", "--home", str(home), env={"COLUMNS": "200"})  # every column, unabbreviated
    table = shown.stdout.splitlines()
    assert shown.returncode == 0 and table[0].split()[:5] == ["#", "runner", "window", "kind", "features"]
    assert next(line for line in table if line.startswith("1 ")).split()[1:5] == [
        "simple", "green/2021-01", "linear", "onehot"]


@pytest.mark.slow
def test_random_forest_trains_serves_and_logs_its_params(make_settings) -> None:
    settings = make_settings(model={"kind": "random_forest", "features": "onehot",
                                    "params": {"n_estimators": 4, "max_depth": 8}})
    records = SimplePipeline(settings).run()
    assert 6.0 < records["train"]["rmse"] < 9.0 and records["train"]["kind"] == "random_forest"
    run = tracking.client(settings).get_run(records["train"]["run_id"])
    assert run.data.params["n_estimators"] == "4" and run.data.params["max_depth"] == "8"
    assert records["deploy"]["champion"] is True


@pytest.mark.parametrize("overrides, words", [
    ({"model": {"kind": "linear"}}, ["model.kind 'linear'", "model.features 'categorical'", "--features onehot"]),
    ({"model": {"kind": "random_forest", "features": "onehot", "params": {"learning_rate": 0.1}}},
     ["model.params.learning_rate", "'random_forest'", "n_estimators"]),
    ({"model": {"kind": "linear", "features": "onehot", "preset": "zoomcamp"}},
     ["model.preset 'zoomcamp'", "'linear'", "xgboost"]),
    ({"model": {"kind": "svm"}}, ["model.kind 'svm'", "xgboost, linear, random_forest"]),
])
def test_a_wrong_kind_setting_is_one_sentence(overrides: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(overrides=overrides)
    message = str(raised.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_the_cli_names_both_settings_when_kind_and_features_clash(home: Path, tlc_server) -> None:
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--model", "linear")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "❌ invalid configuration: model.kind 'linear' works on the onehot features, not model.features "
        "'categorical'; set model.features to onehot (--features onehot)"]
    assert not (home / "downloads").exists()


@pytest.mark.slow
def test_early_stopping_keeps_the_best_round(make_settings, tlc_dir: Path) -> None:
    settings = make_settings(model={"params": {"learning_rate": 1.0, "n_estimators": 60, "max_depth": 8},
                                    "early_stopping_rounds": 3})
    trained = SimplePipeline(settings).run()["train"]
    best = trained["best_iteration"]
    assert best + 1 < trained["boosted_rounds"]
    run = tracking.client(settings).get_run(trained["run_id"])
    assert run.data.metrics["best_iteration"] == best

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"runs:/{trained['run_id']}/model")
    assert model.unwrap_python_model().model.booster.num_boosted_rounds() == best + 1
    rides = add_duration(read_trips(tlc_dir / "green_tripdata_2021-02.parquet", "green")).to_pandas()
    assert rmse(rides[TARGET], model.predict(rides[MODEL_COLUMNS])) == pytest.approx(trained["rmse"], abs=1e-9)


def champion_of(settings) -> str:
    """The version behind `champion` in the real registry."""
    client = tracking.client(settings)
    return str(client.get_model_version_by_alias(settings.mlflow.model_name, "champion").version)


def version_tags(settings, version: int) -> dict[str, str]:
    return tracking.client(settings).get_model_version(settings.mlflow.model_name, str(version)).tags


@pytest.mark.slow
def test_every_verdict_is_registered_with_its_reason_and_moves_the_alias_only_when_promotable(make_settings) -> None:
    """The wiring of the gate (the rule itself: test_gate.py): an identical rerun, a gain below
    validation.min_improvement and a better model, each registered with its verdict."""
    settings = make_settings(model=QUICK)
    first = SimplePipeline(settings).run()
    again = SimplePipeline(settings).run()
    assert again["train"]["rmse"] == first["train"]["rmse"]
    assert again["validate_model"]["champion_rmse"] == pytest.approx(first["train"]["rmse"], abs=1e-9)
    assert again["deploy"]["champion"] is False and "equals champion v1's" in again["deploy"]["reason"]
    assert version_tags(settings, 2)["verdict"] == "not promoted"
    assert "equals champion v1's" in version_tags(settings, 2)["reason"]

    better = {"features": "categorical", "params": {"n_estimators": 30}}
    held = SimplePipeline(make_settings(model=better, validation={"min_improvement": 5.0})).run()
    assert held["deploy"]["champion"] is False
    assert "less than validation.min_improvement 5.0" in held["deploy"]["reason"]
    assert champion_of(settings) == "1"

    moved = SimplePipeline(make_settings(model=better)).run()
    assert moved["deploy"]["champion"] is True and moved["deploy"]["version"] == 4
    assert "beats champion v1's" in moved["deploy"]["summary"]
    assert champion_of(settings) == "4"
    assert version_tags(settings, 4)["verdict"] == "promoted"
    assert version_tags(settings, 4)["trained_on"] == "green/2021-01"
    deployed = json.loads((settings.home / "deployments" / "green_2021-01.json").read_text())
    assert deployed["version"] == 4 and deployed["champion"] is True


def test_versions_registered_under_the_old_module_name_still_load() -> None:
    """Versions registered before the class moved recorded `taxipipe.serving.TripDurationModel`."""
    import pickle

    from taxipipe.pyfunc import TripDurationModel

    assert pickle.loads(b"ctaxipipe.serving\nTripDurationModel\n.") is TripDurationModel
