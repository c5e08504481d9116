"""scikit-learn's RandomForestRegressor on the one-hot matrix, on every core."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from pydantic import Field

from taxipipe.models.base import EstimatorModel, Fit, KindParams, KindSettings, Matrices, ModelKind, fit_estimator

if TYPE_CHECKING:
    from taxipipe.features import Encoder


class RandomForestParams(KindParams):
    n_estimators: int = Field(default=50, ge=1)
    max_depth: int | None = Field(default=20, ge=1)
    min_samples_leaf: int = Field(default=1, ge=1)
    max_features: float = Field(default=1.0, gt=0, le=1)
    random_state: int = 42


def train(model: KindSettings, encoder: Encoder, train: Matrices, validation: Matrices,
          callbacks: Sequence[Any] = ()) -> Fit:
    from sklearn.ensemble import RandomForestRegressor

    return fit_estimator(RandomForestRegressor(**model.params.model_dump(), n_jobs=-1), train, validation)


KIND = ModelKind("random_forest", "scikit-learn RandomForestRegressor", RandomForestParams, ("onehot",),
                 train, EstimatorModel.load)
