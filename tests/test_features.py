"""Duration, filters and the two encoders, checked against the reference on real months."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from taxipipe.features import Encoder, add_duration
from taxipipe.tlc import read_trips


def reference_frame(path: Path) -> pd.DataFrame:
    """The reference pipeline's read_dataframe (Series.apply and all)."""
    df = pd.read_parquet(path)
    df["duration"] = df.lpep_dropoff_datetime - df.lpep_pickup_datetime
    df.duration = df.duration.apply(lambda td: td.total_seconds() / 60)
    df = df[(df.duration >= 1) & (df.duration <= 60)].copy()
    df[["PULocationID", "DOLocationID"]] = df[["PULocationID", "DOLocationID"]].astype(str)
    df["PU_DO"] = df["PULocationID"] + "_" + df["DOLocationID"]
    return df


@pytest.fixture(scope="module")
def months(tlc_dir: Path) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """(ours, reference's) rides of the training and the validation month."""
    result = {}
    for role, label in (("train", "2021-01"), ("validation", "2021-02")):
        path = tlc_dir / f"green_tripdata_{label}.parquet"
        result[role] = (add_duration(read_trips(path, "green")).to_pandas(), reference_frame(path))
    return result


def test_duration_filter_matches_reference(months) -> None:
    for ours, reference in months.values():
        assert len(ours) == len(reference)
        np.testing.assert_array_equal(ours["duration"].to_numpy(), reference["duration"].to_numpy())
        assert ours["duration"].between(1, 60).all()


def test_onehot_equals_dictvectorizer_element_by_element(months) -> None:
    from sklearn.feature_extraction import DictVectorizer

    (train, train_ref), (validation, validation_ref) = months["train"], months["validation"]
    vectorizer = DictVectorizer(sparse=True)
    expected_train = vectorizer.fit_transform(train_ref[["PU_DO", "trip_distance"]].to_dict(orient="records"))
    expected_validation = vectorizer.transform(validation_ref[["PU_DO", "trip_distance"]].to_dict(orient="records"))

    encoder = Encoder.fit("onehot", train)
    assert encoder.feature_names == list(vectorizer.feature_names_)
    for ours, expected in ((encoder.transform(train), expected_train),
                           (encoder.transform(validation), expected_validation)):
        assert ours.shape == expected.shape
        assert ours.nnz == expected.nnz  # explicit zeros (trip_distance 0.0) kept as DictVectorizer does
        assert (ours != expected).nnz == 0
        ours, expected = ours.tocsr(), expected.tocsr()
        ours.sort_indices()
        expected.sort_indices()
        for part in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(ours, part), getattr(expected, part))


def test_unseen_zones_are_missing_not_errors(months) -> None:
    train = months["train"][0]
    encoder = Encoder.fit("categorical", train)
    rides = pd.DataFrame({"PULocationID": [train.PULocationID.iloc[0], 999],
                          "DOLocationID": [998, train.DOLocationID.iloc[0]],
                          "trip_distance": [1.5, 2.5]})
    matrix = encoder.transform(rides)
    assert not np.isnan(matrix[0, 0]) and np.isnan(matrix[0, 1])
    assert np.isnan(matrix[1, 0]) and not np.isnan(matrix[1, 1])
    onehot = Encoder.fit("onehot", train).transform(rides)
    assert onehot.getrow(0).nnz == 1 and onehot[0, onehot.shape[1] - 1] == 1.5


def test_encoder_round_trips_through_json(months) -> None:
    train = months["train"][0]
    for mode in ("categorical", "onehot"):
        encoder = Encoder.fit(mode, train)
        again = Encoder.from_json(encoder.to_json())
        assert again == encoder


def test_a_feature_set_is_one_registered_class(months, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from taxipipe import features
    from taxipipe.config import load_settings
    from taxipipe.errors import ConfigError
    from taxipipe.models.xgboost import to_dmatrix

    monkeypatch.setattr(features, "FEATURE_SETS", dict(features.FEATURE_SETS))
    with pytest.raises(ConfigError, match="unknown feature set, known: categorical, onehot"):
        load_settings(overrides={"home": str(tmp_path), "model": {"features": "distance"}})

    @features.register
    class DistanceOnly(features.FeatureSet):
        name = "distance"

        def fit(self, pickup, dropoff, distance):
            return {"longest": [float(distance.max())]}

        def feature_names(self, state):
            return ["trip_distance"]

        def encode(self, state, pickup, dropoff, distance):
            return (distance / state["longest"][0]).reshape(-1, 1)

    settings = load_settings(overrides={"home": str(tmp_path), "model": {"features": "distance"}})
    train = months["train"][0]
    encoder = Encoder.fit(settings.model.features, train)
    assert Encoder.from_json(encoder.to_json()) == encoder
    assert encoder.transform(train).shape == (len(train), 1) and encoder.feature_types is None
    assert to_dmatrix(encoder, encoder.transform(train), train["duration"]).num_col() == 1


def test_an_encoder_saved_before_the_registry_still_loads() -> None:
    saved = '{"mode": "categorical", "pickup_zones": [7, 74], "dropoff_zones": [42], "vocabulary": []}'
    encoder = Encoder.from_json(saved)
    matrix = encoder.encode(np.array([74, 5]), np.array([42, 42]), np.array([1.5, 2.0]))
    assert matrix[0, :2].tolist() == [1.0, 0.0] and np.isnan(matrix[1, 0]) and encoder.feature_types == ["c", "c", "q"]
