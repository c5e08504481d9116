"""Drift statistics of one column between the training data and a monitored month, and the
report of a whole month (`MonitorReport`) that the console, the HTML page and the metrics show.

PSI (population stability index) decides: zones by their share of rides, numbers by the
training data's deciles. PSI does not grow with the row count, so one threshold (0.2 is the
usual "major shift") fits a 60k-ride green month and a 3M-ride yellow one. KS statistic and
Wasserstein distance (numbers) and Jensen-Shannon distance (zones) describe the shift; on
months of this size a KS p-value is ~0 for any visible difference, so they are not thresholded.
The Wasserstein distance is taken over the percentiles TRIM..1-TRIM (`trimmed_wasserstein`):
the TLC files hold rides of hundreds of thousands of miles, and one of them would outweigh
the whole month's shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxipipe.partition import Partition
from taxipipe.ride_rules import SetAside
from taxipipe.window import window_key, window_label

if TYPE_CHECKING:
    import numpy as np

ZONES = ("PULocationID", "DOLocationID")
NUMERIC = ("trip_distance", "predicted_minutes")
#: The MLflow experiment `taxipipe monitor` logs its reports to.
EXPERIMENT = "monitoring"
SHARE_FLOOR = 1e-4
DECILES = 10
#: The share of rides at each end that the Wasserstein distance leaves out.
TRIM = 0.01


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
    """Shift of a numeric column: PSI over the reference's deciles, KS statistic, trimmed Wasserstein distance."""
    import numpy as np
    from scipy import stats

    edges = np.unique(np.quantile(reference, np.linspace(0, 1, DECILES + 1)[1:-1]))

    def shares(values: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1) / len(values)

    return Drift(column, psi(shares(reference), shares(current)), threshold,
                 ks=float(stats.ks_2samp(reference, current).statistic),
                 wasserstein=trimmed_wasserstein(reference, current))


def trimmed_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """How far, on average, a ride's value moved between the two samples, in the column's unit: the mean
    absolute difference of their percentiles TRIM..1-TRIM (the Wasserstein-1 distance of their middle
    rides), so a few absurd values at either end cannot dominate it."""
    import numpy as np

    levels = np.linspace(TRIM, 1 - TRIM, round((1 - 2 * TRIM) * 1000) + 1)  # every 0.1 percentile
    return float(np.mean(np.abs(np.quantile(reference, levels) - np.quantile(current, levels))))


@dataclass
class MonitorReport:
    """The comparison of a month with the champion's training window, and where it was recorded."""

    partition: Partition
    reference: tuple[Partition, ...]
    model_name: str
    model_version: int
    champion_run_id: str
    rows: int
    reference_rows: int
    drifts: list[Drift]
    rmse: float
    champion_rmse: float | None
    max_rmse_increase: float
    report_path: Path | None = None
    run_id: str | None = None
    seconds: float = 0.0
    set_aside: SetAside = field(default_factory=SetAside)
    distributions: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def rmse_increase(self) -> float | None:
        return None if self.champion_rmse is None else self.rmse - self.champion_rmse

    @property
    def rmse_verdict(self) -> str:
        """`within limits`, `over the limit` or `not compared` (the champion's RMSE is unknown)."""
        if self.rmse_increase is None:
            return "not compared"
        return "over the limit" if self.rmse_increase > self.max_rmse_increase else "within limits"

    @property
    def headline(self) -> str:
        """`3 of 4 columns drifted; RMSE within limits`."""
        drifted = sum(d.drifted for d in self.drifts)
        return f"{drifted} of {len(self.drifts)} columns drifted; RMSE {self.rmse_verdict}"

    @property
    def trained_on(self) -> bool:
        """Whether the monitored month is one the champion was trained on."""
        return self.partition in self.reference

    @property
    def trained_on_note(self) -> str:
        return (f"{self.partition.color} {self.partition.label} is one of the months the champion was trained on "
                f"({window_label(self.reference)}): the month is compared with data that contains it, so small "
                f"values say nothing about drift; monitor a month after the training window.")

    @property
    def reasons(self) -> list[str]:
        """Every threshold crossed, in words."""
        found = [f"{d.column} PSI {d.psi:.3f} > {d.threshold}" for d in self.drifts if d.drifted]
        if self.rmse_increase is not None and self.rmse_increase > self.max_rmse_increase:
            found.append(f"RMSE {self.rmse:.3f} is {self.rmse_increase:.3f} above the champion's "
                         f"{self.champion_rmse:.3f} (allowed {self.max_rmse_increase})")
        return found

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {"rmse": self.rmse, "rows": self.rows, "reference_rows": self.reference_rows,
                                    "set_aside_rows": self.set_aside.rides, "drifted": float(self.drifted)}
        if self.champion_rmse is not None:
            values.update(champion_rmse=self.champion_rmse, rmse_increase=self.rmse_increase)
        for drift in self.drifts:
            for stat in ("psi", "ks", "wasserstein", "jensen_shannon"):
                value = getattr(drift, stat)
                if value is not None:
                    values[f"{drift.column}.{stat}"] = value
        return values

    def record(self) -> dict[str, Any]:
        """A small JSON-serialisable record (for schedulers' XCom and task results)."""
        return {"partition": self.partition.key, "reference": window_key(self.reference),
                "model_version": self.model_version, "drifted": self.drifted, "reasons": self.reasons,
                "rmse": self.rmse, "champion_rmse": self.champion_rmse, "run_id": self.run_id,
                "set_aside": self.set_aside.broken,
                "report": str(self.report_path) if self.report_path else None,
                "psi": {d.column: d.psi for d in self.drifts}}

    def table(self) -> str:
        lines = [f"🔎 {self.partition.color} {self.partition.label} ({self.rows:,} rides) against "
                 f"{self.model_name} v{self.model_version}'s training data {window_label(self.reference)} "
                 f"({self.reference_rows:,} rides)", *self._set_aside_lines(), "",
                 f"{'column':<18} {'PSI':>7} {'limit':>6} {'KS':>7} {'Wasserst.':>9} {'JS':>7}  drift"]
        for d in self.drifts:
            cells = [_cell(d.ks), _cell(d.wasserstein, 9), _cell(d.jensen_shannon)]
            lines.append(f"{d.column:<18} {d.psi:>7.4f} {d.threshold:>6} {cells[0]} {cells[1]} {cells[2]}  "
                         f"{'YES' if d.drifted else 'no'}")
        champion = f"{self.champion_rmse:.4f}" if self.champion_rmse is not None else "unknown"
        lines += ["", f"RMSE {self.rmse:.4f} on the month's rides of 1..60 minutes; champion registered with "
                      f"{champion} (allowed increase {self.max_rmse_increase})"]
        verdict = "⚠️  drift: " + "; ".join(self.reasons) if self.drifted else "✅ no threshold crossed"
        lines.append(verdict)
        if self.trained_on:
            lines.append(f"   note: {self.trained_on_note}")
        if self.report_path:
            lines.append(f"   report {self.report_path} (MLflow run {self.run_id} in '{EXPERIMENT}')")
        return "\n".join(lines)

    def _set_aside_lines(self) -> list[str]:
        return [f"   ⚠️  {self.set_aside.summary()}"] if self.set_aside.rides else []


def _cell(value: float | None, width: int = 7) -> str:
    return f"{value:>{width}.4f}" if value is not None else " " * (width - 1) + "-"
