"""What every model kind provides, and the pieces the kinds share.

A kind (`ModelKind`) names its parameters (a pydantic model: unknown keys are errors), the
feature modes it can learn from, its presets, and two functions: `train` (fit on the training
month, score the validation month) and `load` (read what `TrainedModel.save` wrote).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import numpy as np

    from taxipipe.features import Encoder

#: RMSEs (minutes) closer than this are the same: runs that agree, a rerun that is no better.
RMSE_AGREEMENT = 1e-6
#: A feature matrix and its target, as `features.load_matrix` returns them.
Matrices = tuple[Any, Any]
#: `train(model settings, encoder, training month, validation month, callbacks)`: the callbacks
#: watch the rounds of kinds that train in rounds (XGBoost); other kinds ignore them.
Train = Callable[["KindSettings", "Encoder", Matrices, Matrices, Sequence[Any]], "Fit"]


class KindParams(BaseModel):
    """The parameters of one kind (`model.params`): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class KindSettings(Protocol):
    """What a kind reads of the model settings (`config.KindSettings` is one)."""

    @property
    def params(self) -> Any: ...

    @property
    def early_stopping_rounds(self) -> int: ...


class TrainedModel(Protocol):
    """A fitted model: predicts minutes from an encoded feature matrix and saves itself."""

    def predict(self, matrix: Any) -> np.ndarray: ...

    def save(self, path: Path) -> None: ...


@dataclass(frozen=True)
class Fit:
    """What training returns: the model, its validation predictions, metrics to log."""

    model: TrainedModel
    predictions: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


def plain_params(model: KindSettings) -> dict[str, Any]:
    """The MLflow params of a kind whose parameters go to the model as they are."""
    return model.params.model_dump()


@dataclass(frozen=True)
class ModelKind:
    """One registered kind of model.

    `feature_modes` are the feature sets it can learn from (None: any); `log_params` gives the
    run's MLflow params; `rounds`, for kinds that train in rounds, how many (progress callbacks
    watch them).
    """

    name: str
    description: str
    params: type[KindParams]
    feature_modes: tuple[str, ...] | None
    train: Train
    load: Callable[[Path, Encoder], TrainedModel]
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    log_params: Callable[[KindSettings], dict[str, Any]] = plain_params
    rounds: Callable[[KindSettings], int] | None = None


class EstimatorModel:
    """A fitted scikit-learn estimator, pickled as it is."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict(self, matrix: Any) -> np.ndarray:
        return self.estimator.predict(matrix)

    def save(self, path: Path) -> None:
        with open(path, "wb") as out:
            pickle.dump(self.estimator, out, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path: Path, encoder: Encoder) -> EstimatorModel:
        with open(path, "rb") as stored:
            return cls(pickle.load(stored))


def fit_estimator(estimator: Any, train: Matrices, validation: Matrices) -> Fit:
    """Fit a scikit-learn estimator on the training month; predict the validation month."""
    estimator.fit(*train)
    model = EstimatorModel(estimator)
    return Fit(model, model.predict(validation[0]))


def rmse(actual: Any, predicted: Any) -> float:
    """Root mean squared error in minutes."""
    import numpy as np

    difference = np.asarray(actual, dtype=np.float64) - np.asarray(predicted, dtype=np.float64)
    return float(np.sqrt(np.mean(difference * difference)))
