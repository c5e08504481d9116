"""scikit-learn's LinearRegression on the one-hot matrix (the course's baseline)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from taxipipe.models.base import EstimatorModel, Fit, KindParams, KindSettings, Matrices, ModelKind, fit_estimator

if TYPE_CHECKING:
    from taxipipe.features import Encoder


class LinearParams(KindParams):
    fit_intercept: bool = True


def train(model: KindSettings, encoder: Encoder, train: Matrices, validation: Matrices,
          callbacks: Sequence[Any] = ()) -> Fit:
    from sklearn.linear_model import LinearRegression

    return fit_estimator(LinearRegression(fit_intercept=model.params.fit_intercept), train, validation)


KIND = ModelKind("linear", "scikit-learn LinearRegression", LinearParams, ("onehot",), train,
                 EstimatorModel.load)
