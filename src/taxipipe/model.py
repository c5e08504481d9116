"""XGBoost training and scoring on the encoded feature matrices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from taxipipe.config import ModelSettings
from taxipipe.features import Encoder

if TYPE_CHECKING:
    import numpy as np
    import xgboost as xgb


def booster_params(model: ModelSettings) -> dict[str, Any]:
    """The XGBoost native-API parameters of the configured model."""
    params = model.params
    native: dict[str, Any] = {
        "max_depth": params.max_depth,
        "learning_rate": params.learning_rate,
        "seed": params.random_state,
        "objective": "reg:squarederror",
    }
    for optional in ("min_child_weight", "reg_alpha", "reg_lambda"):
        value = getattr(params, optional)
        if value is not None:
            native[optional] = value
    return native


def to_dmatrix(encoder: Encoder, matrix: Any, target: Any = None, quantised: bool = False) -> xgb.DMatrix:
    """Wrap a feature matrix for XGBoost, categorical codes as native categoricals.

    `quantised` builds a QuantileDMatrix (less memory; for the training set). Evaluation and
    prediction use a plain DMatrix: predicting from quantised data is about twice as slow.
    """
    import xgboost as xgb

    types = encoder.feature_types
    if types is None:
        return xgb.DMatrix(matrix, label=target)
    kwargs = {"feature_names": encoder.feature_names, "feature_types": types, "enable_categorical": True}
    if quantised:
        return xgb.QuantileDMatrix(matrix, label=target, **kwargs)
    return xgb.DMatrix(matrix, label=target, **kwargs)


def train_booster(
    model: ModelSettings, encoder: Encoder, train: tuple[Any, Any], validation: tuple[Any, Any],
    callbacks: Sequence[xgb.callback.TrainingCallback] = (),
) -> tuple[xgb.Booster, np.ndarray]:
    """Train with early stopping on the validation month; return the booster and its predictions.

    `callbacks` watch the rounds (e.g. `taxipipe.progress.TrainingProgress`).
    """
    import xgboost as xgb

    dtrain = to_dmatrix(encoder, *train, quantised=True)
    dvalid = to_dmatrix(encoder, *validation)
    booster = xgb.train(
        booster_params(model),
        dtrain,
        num_boost_round=model.params.n_estimators,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=model.early_stopping_rounds,
        verbose_eval=False,
        callbacks=list(callbacks),
    )
    return booster, booster.predict(dvalid)


def rmse(actual: Any, predicted: Any) -> float:
    """Root mean squared error in minutes."""
    import numpy as np

    difference = np.asarray(actual, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    return float(np.sqrt(np.mean(difference * difference)))
