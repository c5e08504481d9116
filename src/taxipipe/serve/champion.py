"""The served champion: loaded from the registry, swapped in whole when the alias moves.

Requests read `ServedChampion.current` once and keep that object to the end, so a swap (one
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


class ServedChampion:
    """Holds the current champion and replaces it when the registry's alias points elsewhere.

    A lookup or a load that fails, or an alias deleted while a version is served, keeps what
    is being served; the reason is kept in `problem` (and shown by `describe`) until a later
    refresh succeeds.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.mlflow.model_name
        self.current: Loaded | None = None
        self.checked_at: float | None = None
        self.registry_version: int | None = None
        self.problem: str | None = None
        self._lock = threading.Lock()

    @property
    def missing_sentence(self) -> str:
        """Why there is nothing to serve: the failed lookup or load, or no champion in the registry."""
        return self.problem or NO_CHAMPION.format(alias=tracking.CHAMPION, name=self.name)

    def refresh(self) -> bool:
        """Look the alias up; load and swap in its version when it moved. True when swapped.

        Never raises for a store that cannot be read or a version that cannot be loaded
        (artifacts gone, a damaged file): those are reported, and the current model stays.
        """
        with self._lock:
            try:
                version = tracking.champion_version(tracking.client(self.settings), self.name)
            except TaxipipeError as exc:
                self.problem = f"the champion cannot be looked up: {exc}"
                return False
            self.checked_at = time.time()
            self.registry_version = None if version is None else int(version.version)
            if version is None and self.current is not None:
                self.problem = (f"no model carries the alias '{tracking.CHAMPION}' of '{self.name}' any more (the "
                                f"alias or the model was deleted from the registry); still serving version "
                                f"{self.current.version} until a champion is set again")
                return False
            if version is None or (self.current is not None and self.current.version == self.registry_version):
                self.problem = None
                return False
            try:
                loaded = load_version(self.settings, self.name, version)
            except Exception as exc:  # whatever the store or the artifacts raise, the service keeps serving
                self.problem = (f"version {version.version} of '{self.name}' (alias '{tracking.CHAMPION}') cannot be "
                                f"loaded: {type(exc).__name__}: {_first_line(exc)}")
                return False
            self.current, self.problem = loaded, None
            return True

    def describe(self) -> dict[str, Any]:
        """What /health reports: the loaded version beside the registry's, and any problem."""
        loaded = self.current
        info: dict[str, Any] = {"model_name": self.name, "alias": tracking.CHAMPION,
                                "status": "ok" if loaded else "no champion", "registry_version": self.registry_version}
        if loaded is None:
            info["detail"] = self.missing_sentence
            return info
        info.update(version=loaded.version, run_id=loaded.run_id, loaded_at=loaded.loaded_at)
        if self.problem:
            info["status"] = "stale" if self.registry_version != loaded.version else "ok"
            info["warning"] = self.problem
        return info


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def load_version(settings: Settings, name: str, version: Any) -> Loaded:
    """Load one registered version with MLflow and keep its python model for the array path."""
    import mlflow.pyfunc

    tracking.client(settings)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}", suppress_warnings=True)
    return Loaded(name=name, version=int(version.version), run_id=version.run_id,
                  loaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  model=pyfunc.unwrap_python_model(), registered_at=(version.creation_timestamp or 0) / 1000)
