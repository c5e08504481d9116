"""The MLflow pyfunc model: encoder and booster together, raw rides in, minutes out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc

from taxipipe.features import MODEL_COLUMNS, Encoder
from taxipipe.model import to_dmatrix


class TripDurationModel(mlflow.pyfunc.PythonModel):
    """Predicts trip minutes from PULocationID, DOLocationID and trip_distance."""

    def load_context(self, context: Any) -> None:
        import xgboost as xgb

        self.encoder = Encoder.load(Path(context.artifacts["encoder"]))
        self.booster = xgb.Booster()
        self.booster.load_model(context.artifacts["booster"])

    def predict(self, context, model_input, params=None):
        rides = model_input[MODEL_COLUMNS]
        return self.booster.predict(to_dmatrix(self.encoder, self.encoder.transform(rides)))
