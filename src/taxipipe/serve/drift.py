"""Drift statistics of one column between the training data and a monitored month.

PSI (population stability index) decides: zones by their share of rides, numbers by the
training data's deciles. PSI does not grow with the row count, so one threshold (0.2 is the
usual "major shift") fits a 60k-ride green month and a 3M-ride yellow one. KS statistic and
Wasserstein distance (numbers) and Jensen-Shannon distance (zones) describe the shift; on
months of this size a KS p-value is ~0 for any visible difference, so they are not thresholded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ZONES = ("PULocationID", "DOLocationID")
NUMERIC = ("trip_distance", "predicted_minutes")
SHARE_FLOOR = 1e-4
DECILES = 10


@dataclass(frozen=True)
class Drift:
    """One column's shift between the training data and the monitored month."""

    column: str
    psi: float
    threshold: float
    ks: float | None = None
    wasserstein: float | None = None
    jensen_shannon: float | None = None

    @property
    def drifted(self) -> bool:
        return self.psi > self.threshold


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two vectors of shares (each summing to 1)."""
    import numpy as np

    ref = np.clip(reference, SHARE_FLOOR, None)
    cur = np.clip(current, SHARE_FLOOR, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def zone_drift(column: str, reference: np.ndarray, current: np.ndarray, threshold: float) -> Drift:
    """Shift of a zone column: PSI and Jensen-Shannon distance of the zones' shares of rides."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon

    size = int(max(reference.max(initial=0), current.max(initial=0))) + 1
    ref = np.bincount(reference.astype(np.int64), minlength=size) / max(len(reference), 1)
    cur = np.bincount(current.astype(np.int64), minlength=size) / max(len(current), 1)
    return Drift(column, psi(ref, cur), threshold, jensen_shannon=float(jensenshannon(ref, cur, base=2)))


def numeric_drift(column: str, reference: np.ndarray, current: np.ndarray, threshold: float) -> Drift:
    """Shift of a numeric column: PSI over the reference's deciles, KS statistic, Wasserstein distance."""
    import numpy as np
    from scipy import stats

    edges = np.unique(np.quantile(reference, np.linspace(0, 1, DECILES + 1)[1:-1]))

    def shares(values: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1) / len(values)

    return Drift(column, psi(shares(reference), shares(current)), threshold,
                 ks=float(stats.ks_2samp(reference, current).statistic),
                 wasserstein=float(stats.wasserstein_distance(reference, current)))
