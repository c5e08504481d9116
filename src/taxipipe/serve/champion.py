"""The served champion: loaded from the registry, swapped in whole when the alias moves.

Requests read `Champion.current` once and keep that object to the end, so a swap (one
attribute assignment) never hands a request half of an old and half of a new model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from taxipipe import tracking
from taxipipe.config import Settings
from taxipipe.errors import TaxipipeError

if TYPE_CHECKING:
    import numpy as np

NO_CHAMPION = "no model carries the alias '{alias}' of '{name}' yet; run the pipeline first (taxipipe run)"


@dataclass(frozen=True)
class Loaded:
    """One loaded model version and where it came from."""

    name: str
    version: int
    run_id: str
    loaded_at: str
    model: Any
    registered_at: float = 0.0

    def predict(self, pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> np.ndarray:
        return self.model.predict_rides(pickup, dropoff, distance)


class Champion:
    """Holds the current champion and replaces it when the registry's alias points elsewhere."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.mlflow.model_name
        self.current: Loaded | None = None
        self.checked_at: float | None = None
        self.lookup_error: str | None = None
        self._lock = threading.Lock()

    @property
    def missing_sentence(self) -> str:
        """Why there is nothing to serve: the failed lookup, or no champion in the registry."""
        return self.lookup_error or NO_CHAMPION.format(alias=tracking.CHAMPION, name=self.name)

    def refresh(self) -> bool:
        """Look the alias up; load and swap in its version when it moved. True when swapped.

        A store that cannot be read (a user-facing TaxipipeError) keeps the current model and
        is reported by `describe` until a later lookup succeeds.
        """
        with self._lock:
            try:
                version = tracking.champion_version(tracking.client(self.settings), self.name)
            except TaxipipeError as exc:
                self.lookup_error = f"the champion cannot be looked up: {exc}"
                return False
            self.lookup_error = None
            self.checked_at = time.time()
            if version is None or (self.current is not None and self.current.version == int(version.version)):
                return False
            self.current = load_version(self.settings, self.name, version)
            return True

    def describe(self) -> dict[str, Any]:
        """What /health reports."""
        loaded = self.current
        info: dict[str, Any] = {"model_name": self.name, "alias": tracking.CHAMPION,
                                "status": "ok" if loaded else "no champion"}
        if loaded is None:
            info["detail"] = self.missing_sentence
            return info
        info.update(version=loaded.version, run_id=loaded.run_id, loaded_at=loaded.loaded_at)
        if self.lookup_error:
            info["warning"] = self.lookup_error
        return info


def load_version(settings: Settings, name: str, version: Any) -> Loaded:
    """Load one registered version with MLflow and keep its python model for the array path."""
    import mlflow.pyfunc

    tracking.client(settings)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}", suppress_warnings=True)
    return Loaded(name=name, version=int(version.version), run_id=version.run_id,
                  loaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  model=pyfunc.unwrap_python_model(), registered_at=version.creation_timestamp / 1000)
