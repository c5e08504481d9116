"""The MLflow pyfunc model: encoder and trained model together, raw rides in, minutes out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from taxipipe.features import MODEL_COLUMNS, Encoder


class TripDurationModel(mlflow.pyfunc.PythonModel):
    """Predicts trip minutes from PULocationID, DOLocationID and trip_distance, for every model kind.

    Zone ids may be written as integers or floats (74 or 74.0).
    """

    def load_context(self, context: Any) -> None:
        """Rebuild the encoder and the model; versions logged before model kinds hold a booster."""
        from taxipipe.models.registry import get_kind

        self.encoder = Encoder.load(Path(context.artifacts["encoder"]))
        self.kind = (context.model_config or {}).get("kind", "xgboost")
        stored = context.artifacts.get("model") or context.artifacts["booster"]
        self.model = get_kind(self.kind).load(Path(stored), self.encoder)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.predict_rides(model_input["PULocationID"].to_numpy(), model_input["DOLocationID"].to_numpy(),
                                  model_input["trip_distance"].to_numpy())

    def predict_rides(self, pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """Minutes of rides given as three arrays: the path `taxipipe serve` calls per request."""
        return self.model.predict(self.encoder.encode(pickup, dropoff, distance))


def signature() -> Any:
    """Named, required columns of any numeric type (ids as 74 or 74.0); minutes out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    return ModelSignature(Schema([ColSpec(AnyType(), name) for name in MODEL_COLUMNS]),
                          Schema([ColSpec("double")]))
