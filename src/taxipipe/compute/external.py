"""Training in external memory: row groups stream through XGBoost's ExtMemQuantileDMatrix.

XGBoost reads the window once per pass through a `DataIter`, quantises each batch and keeps
the quantised pages in a cache on disk (under the home), so memory holds one row group, the
model and the validation month, whatever the window's length. (Imported only to train.)
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow.parquet as pq
import xgboost as xgb

from taxipipe.compute.trained import Trained
from taxipipe.compute.stream import read_encoded
from taxipipe.config import Settings
from taxipipe.models.base import Fit
from taxipipe.models.xgboost import BoosterModel, booster_params, keep_best, to_dmatrix


def train_external(settings: Settings, encoder: Any, train_path: Path, validation_path: Path,
                   cache_dir: Path, callbacks: Sequence[Any] = ()) -> Trained:
    """XGBoost with the window in external memory and early stopping on the validation month."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_dir.mkdir(parents=True)
    try:
        batches = RowGroups(train_path, encoder, str(cache_dir / "train"))
        dtrain = xgb.ExtMemQuantileDMatrix(batches, enable_categorical=True)
        validation_matrix, validation_target = read_encoded(validation_path)
        dvalid = to_dmatrix(encoder, validation_matrix, validation_target)
        model = settings.model
        booster = xgb.train(booster_params(model.params), dtrain, num_boost_round=model.params.n_estimators,
                            evals=[(dvalid, "validation")], early_stopping_rounds=model.early_stopping_rounds,
                            verbose_eval=False, callbacks=list(callbacks))
        rows = dtrain.num_row()
        del dtrain
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    booster, metrics = keep_best(booster)
    fit = Fit(BoosterModel(booster), booster.predict(dvalid), metrics={**metrics, "row_groups": batches.groups})
    return Trained(fit, validation_target, rows)


class RowGroups(xgb.DataIter):
    """The row groups of an encoded parquet file, one batch each."""

    def __init__(self, path: Path, encoder: Any, cache_prefix: str) -> None:
        self.path, self.encoder = path, encoder
        self.groups = pq.ParquetFile(path).num_row_groups
        self._next = 0
        super().__init__(cache_prefix=cache_prefix, on_host=False)

    def next(self, input_data: Callable[..., None]) -> bool:
        if self._next == self.groups:
            return False
        matrix, target = read_encoded(self.path, self._next)
        input_data(data=matrix, label=target, feature_names=self.encoder.feature_names,
                   feature_types=self.encoder.feature_types)
        self._next += 1
        return True

    def reset(self) -> None:
        self._next = 0
