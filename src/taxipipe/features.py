"""Duration and filters, and the two encoders of a ride into model features.

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
from typing import TYPE_CHECKING, Literal

from taxipipe.data import DROPOFF, PICKUP

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import scipy.sparse as sp

MIN_MINUTES, MAX_MINUTES = 1.0, 60.0
MODEL_COLUMNS = ["PULocationID", "DOLocationID", "trip_distance"]
TARGET = "duration"
PAIR_KEY_BASE = 100_000
FeatureMode = Literal["categorical", "onehot"]


def add_duration(trips: pa.Table) -> pa.Table:
    """Keep rides of 1..60 minutes; return the model columns plus `duration` in minutes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    elapsed = pc.subtract(trips[DROPOFF], trips[PICKUP]).cast(pa.int64())
    minutes = pc.divide(pc.divide(elapsed.cast(pa.float64()), 1e6), 60.0)
    keep = pc.and_(pc.greater_equal(minutes, MIN_MINUTES), pc.less_equal(minutes, MAX_MINUTES))
    table = trips.select(MODEL_COLUMNS).append_column(TARGET, minutes)
    return table.filter(pc.fill_null(keep, False))


@dataclass
class Encoder:
    """Fitted feature encoding; serialisable to JSON so the served model can rebuild it."""

    mode: FeatureMode
    pickup_zones: list[int] = field(default_factory=list)
    dropoff_zones: list[int] = field(default_factory=list)
    vocabulary: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, mode: FeatureMode, rides: pd.DataFrame) -> Encoder:
        import numpy as np

        if mode == "categorical":
            return cls(
                mode,
                pickup_zones=np.unique(rides["PULocationID"]).tolist(),
                dropoff_zones=np.unique(rides["DOLocationID"]).tolist(),
            )
        pairs = np.unique(_pair_keys(rides["PULocationID"].to_numpy(), rides["DOLocationID"].to_numpy()))
        names = [f"PU_DO={key // PAIR_KEY_BASE}_{key % PAIR_KEY_BASE}" for key in pairs.tolist()]
        return cls(mode, vocabulary=sorted([*names, "trip_distance"]))

    @property
    def feature_names(self) -> list[str]:
        return self.vocabulary if self.mode == "onehot" else list(MODEL_COLUMNS)

    def transform(self, rides: pd.DataFrame) -> np.ndarray | sp.csr_matrix:
        """The feature matrix of `rides` (columns PULocationID, DOLocationID, trip_distance)."""
        return self.encode(rides["PULocationID"].to_numpy(), rides["DOLocationID"].to_numpy(),
                           rides["trip_distance"].to_numpy())

    def encode(self, pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """The feature matrix of rides given as three arrays (no DataFrame: the serving path)."""
        if self.mode == "categorical":
            return self._categorical(pickup, dropoff, distance)
        return self._onehot(pickup, dropoff, distance)

    def _categorical(self, pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> np.ndarray:
        import numpy as np

        matrix = np.empty((len(distance), 3), dtype=np.float32)
        matrix[:, 0] = _positions(np.asarray(self.pickup_zones), pickup)
        matrix[:, 1] = _positions(np.asarray(self.dropoff_zones), dropoff)
        matrix[:, 2] = distance
        return matrix

    def _onehot(self, pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> sp.csr_matrix:
        import numpy as np
        import scipy.sparse as sp

        known_keys, columns = self._pair_columns()
        rows = len(distance)
        pair_column = _positions(known_keys, _pair_keys(pickup, dropoff))
        has_pair = ~np.isnan(pair_column)
        distance_column = len(self.vocabulary) - 1
        counts = has_pair.astype(np.int64) + 1
        indptr = np.zeros(rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = np.full(indptr[-1], distance_column, dtype=np.int32)
        data = np.empty(indptr[-1], dtype=np.float64)
        data[indptr[1:] - 1] = distance
        first = indptr[:-1][has_pair]
        indices[first] = columns[pair_column[has_pair].astype(np.int64)]
        data[first] = 1.0
        return sp.csr_matrix((data, indices, indptr), shape=(rows, len(self.vocabulary)))

    def _pair_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted integer pair keys and the vocabulary column of each."""
        import numpy as np

        keys, columns = [], []
        for column, name in enumerate(self.vocabulary):
            if name.startswith("PU_DO="):
                pickup, dropoff = name[len("PU_DO="):].split("_")
                keys.append(int(pickup) * PAIR_KEY_BASE + int(dropoff))
                columns.append(column)
        keys_array = np.asarray(keys, dtype=np.int64)
        order = np.argsort(keys_array)
        return keys_array[order], np.asarray(columns, dtype=np.int32)[order]

    def to_json(self) -> str:
        return json.dumps(
            {"mode": self.mode, "pickup_zones": self.pickup_zones,
             "dropoff_zones": self.dropoff_zones, "vocabulary": self.vocabulary}
        )

    @classmethod
    def from_json(cls, text: str) -> Encoder:
        return cls(**json.loads(text))

    @classmethod
    def load(cls, path: Path) -> Encoder:
        return cls.from_json(path.read_text())


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
