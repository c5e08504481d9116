"""Duration and filters, and the feature sets that encode a ride into model features.

Feature sets are a registry (`FEATURE_SETS`, `@register`): adding one is one class here.
- `categorical`: PULocationID and DOLocationID as XGBoost native categoricals (category codes
  fitted on the training month) plus trip_distance.
- `onehot`: the exact matrix sklearn's DictVectorizer(sparse=True) makes of
  {"PU_DO": "<PU>_<DO>", "trip_distance": x}: same column names, order and values, built
  with integer keys and array operations instead of a dict per row.

Zones (or zone pairs) unseen in training become missing values (categorical) or an all-zero
one-hot block (onehot), as DictVectorizer does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from taxipipe.errors import ConfigError
from taxipipe.ride_rules import table_columns, valid
from taxipipe.tlc import DROPOFF, PICKUP

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import scipy.sparse as sp

MIN_MINUTES, MAX_MINUTES = 1.0, 60.0
MODEL_COLUMNS = ["PULocationID", "DOLocationID", "trip_distance"]
TARGET = "duration"
PAIR_KEY_BASE = 100_000


def duration_minutes(trips: pa.Table) -> pa.ChunkedArray:
    """Each ride's duration in minutes (dropoff less pickup), the model's target."""
    import pyarrow as pa
    import pyarrow.compute as pc

    elapsed = pc.subtract(trips[DROPOFF], trips[PICKUP]).cast(pa.int64())
    return pc.divide(pc.divide(elapsed.cast(pa.float64()), 1e6), 60.0)


def add_duration(trips: pa.Table) -> pa.Table:
    """Keep the valid rides (`ride_rules`) of 1..60 minutes; return the model columns plus `duration` in minutes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    minutes = duration_minutes(trips)
    keep = pc.and_(pc.greater_equal(minutes, MIN_MINUTES), pc.less_equal(minutes, MAX_MINUTES))
    keep = pc.and_(pc.fill_null(keep, False), pa.array(valid(*table_columns(trips))))
    table = trips.select(MODEL_COLUMNS).append_column(TARGET, minutes)
    return table.filter(keep)


class FeatureSet:
    """One way to encode rides: a state fitted on the training month, then a matrix per month.

    A new feature set is one subclass in this module decorated with `@register`: its `name`
    becomes a value of `model.features` (and of `--features`), and its fitted state is saved
    with the model, so the served model encodes rides the same way.
    """

    name: ClassVar[str]

    def fit(self, pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> dict[str, list]:
        """The state (JSON-able lists) of the encoding, from the training rides."""
        raise NotImplementedError

    def feature_names(self, state: dict[str, list]) -> list[str]:
        raise NotImplementedError

    def feature_types(self, state: dict[str, list]) -> list[str] | None:
        """XGBoost's feature types ("c" categorical, "q" numeric); None: all numeric."""
        return None

    def encode(self, state: dict[str, list], pickup: np.ndarray, dropoff: np.ndarray,
               distance: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """The feature matrix of rides given as three arrays."""
        raise NotImplementedError


#: Every feature set by name: the values `model.features` accepts.
FEATURE_SETS: dict[str, FeatureSet] = {}


def register(cls: type[FeatureSet]) -> type[FeatureSet]:
    """Make a feature set available under its `name`."""
    FEATURE_SETS[cls.name] = cls()
    return cls


@register
class Categorical(FeatureSet):
    """Pickup and dropoff zone as XGBoost native categoricals, plus trip_distance."""

    name = "categorical"

    def fit(self, pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> dict[str, list]:
        import numpy as np

        return {"pickup_zones": np.unique(pickup).tolist(), "dropoff_zones": np.unique(dropoff).tolist()}

    def feature_names(self, state: dict[str, list]) -> list[str]:
        return list(MODEL_COLUMNS)

    def feature_types(self, state: dict[str, list]) -> list[str] | None:
        return ["c", "c", "q"]

    def encode(self, state: dict[str, list], pickup: np.ndarray, dropoff: np.ndarray,
               distance: np.ndarray) -> np.ndarray:
        import numpy as np

        matrix = np.empty((len(distance), 3), dtype=np.float32)
        matrix[:, 0] = _positions(np.asarray(state["pickup_zones"]), pickup)
        matrix[:, 1] = _positions(np.asarray(state["dropoff_zones"]), dropoff)
        matrix[:, 2] = distance
        return matrix


@register
class OneHot(FeatureSet):
    """DictVectorizer(sparse=True) of {"PU_DO": "<PU>_<DO>", "trip_distance": x}, exactly."""

    name = "onehot"

    def fit(self, pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> dict[str, list]:
        import numpy as np

        pairs = np.unique(_pair_keys(pickup, dropoff))
        names = [f"PU_DO={key // PAIR_KEY_BASE}_{key % PAIR_KEY_BASE}" for key in pairs.tolist()]
        return {"vocabulary": sorted([*names, "trip_distance"])}

    def feature_names(self, state: dict[str, list]) -> list[str]:
        return state["vocabulary"]

    def encode(self, state: dict[str, list], pickup: np.ndarray, dropoff: np.ndarray,
               distance: np.ndarray) -> sp.csr_matrix:
        import numpy as np
        import scipy.sparse as sp

        vocabulary = state["vocabulary"]
        known_keys, columns = _pair_columns(vocabulary)
        rows = len(distance)
        pair_column = _positions(known_keys, _pair_keys(pickup, dropoff))
        has_pair = ~np.isnan(pair_column)
        distance_column = len(vocabulary) - 1
        counts = has_pair.astype(np.int64) + 1
        indptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.full(indptr[-1], distance_column, dtype=np.int32)
        data = np.empty(indptr[-1], dtype=np.float64)
        data[indptr[1:] - 1] = distance
        first = indptr[:-1][has_pair]
        indices[first] = columns[pair_column[has_pair].astype(np.int64)]
        data[first] = 1.0
        return sp.csr_matrix((data, indices, indptr), shape=(rows, len(vocabulary)))


def feature_set(name: str) -> FeatureSet:
    """The registered feature set `name`."""
    if name not in FEATURE_SETS:
        raise ConfigError(f"unknown feature set '{name}'; known: {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[name]


@dataclass
class Encoder:
    """A fitted feature set; serialisable to JSON so the served model can rebuild it."""

    mode: str
    state: dict[str, list] = field(default_factory=dict)

    @classmethod
    def fit(cls, mode: str, rides: pd.DataFrame) -> Encoder:
        columns = (rides[column].to_numpy() for column in MODEL_COLUMNS)
        return cls(mode, feature_set(mode).fit(*columns))

    @property
    def feature_names(self) -> list[str]:
        return feature_set(self.mode).feature_names(self.state)

    @property
    def feature_types(self) -> list[str] | None:
        """XGBoost's feature types; None when every feature is numeric."""
        return feature_set(self.mode).feature_types(self.state)

    def transform(self, rides: pd.DataFrame) -> np.ndarray | sp.csr_matrix:
        """The feature matrix of `rides` (columns PULocationID, DOLocationID, trip_distance)."""
        return self.encode(*(rides[column].to_numpy() for column in MODEL_COLUMNS))

    def encode(self, pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """The feature matrix of rides given as three arrays (no DataFrame: the serving path)."""
        return feature_set(self.mode).encode(self.state, pickup, dropoff, distance)

    def to_json(self) -> str:
        return json.dumps({"mode": self.mode, **self.state})

    @classmethod
    def from_json(cls, text: str) -> Encoder:
        state = json.loads(text)
        return cls(state.pop("mode"), state)

    @classmethod
    def load(cls, path: Path) -> Encoder:
        return cls.from_json(path.read_text())


def _pair_columns(vocabulary: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted integer pair keys and the vocabulary column of each."""
    import numpy as np

    keys, columns = [], []
    for column, name in enumerate(vocabulary):
        if name.startswith("PU_DO="):
            pickup, dropoff = name[len("PU_DO="):].split("_")
            keys.append(int(pickup) * PAIR_KEY_BASE + int(dropoff))
            columns.append(column)
    keys_array = np.asarray(keys, dtype=np.int64)
    order = np.argsort(keys_array)
    return keys_array[order], np.asarray(columns, dtype=np.int32)[order]


def _pair_keys(pickup: np.ndarray, dropoff: np.ndarray) -> np.ndarray:
    import numpy as np

    return pickup.astype(np.int64) * PAIR_KEY_BASE + dropoff.astype(np.int64)


def _positions(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in `sorted_values`, NaN where it is absent."""
    import numpy as np

    if len(sorted_values) == 0:
        return np.full(len(values), np.nan)
    found = np.searchsorted(sorted_values, values).clip(0, len(sorted_values) - 1)
    hit = sorted_values[found] == values
    return np.where(hit, found, np.nan)


def save_matrix(path: Path, matrix: np.ndarray | sp.csr_matrix, target: np.ndarray) -> None:
    """Write a feature matrix and its target to an .npz file (atomically, via the caller)."""
    import numpy as np
    import scipy.sparse as sp

    with open(path, "wb") as out:
        if sp.issparse(matrix):
            np.savez(out, kind="csr", data=matrix.data, indices=matrix.indices,
                     indptr=matrix.indptr, shape=matrix.shape, target=target)
        else:
            np.savez(out, kind="dense", matrix=matrix, target=target)


def load_matrix(path: Path) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
    """Read what `save_matrix` wrote."""
    import numpy as np
    import scipy.sparse as sp

    with np.load(path) as stored:
        if str(stored["kind"]) == "csr":
            matrix = sp.csr_matrix(
                (stored["data"], stored["indices"], stored["indptr"]), shape=tuple(stored["shape"])
            )
        else:
            matrix = stored["matrix"]
        return matrix, stored["target"]
