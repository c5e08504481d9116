"""What makes a ride valid: one rule for serving, batch scoring, monitoring, training and the
data quality rules.

A ride has a pickup and a dropoff zone id in 1..265 (whole numbers) and a trip_distance that
is a number in 0..MAX_MILES. The upper bound keeps every model kind finite: XGBoost and the
random forest read features as float32 (which overflows past 3.4e38), and a linear model
extrapolates any distance into minutes; no TLC month holds more than about 294,000 miles.
Rules are named as the quality report names them (`PULocationID in 1..265`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from taxipipe.errors import DataQualityError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

ZONE_FIELDS = ("PULocationID", "DOLocationID")
DISTANCE_FIELD = "trip_distance"
MIN_ZONE, MAX_ZONE = 1, 265
#: The longest trip_distance (miles) a ride may have.
MAX_MILES = 1_000_000.0
NOT_NULL = "not null"
ZONE_RULE = f"in {MIN_ZONE}..{MAX_ZONE}"
NOT_NEGATIVE = "not negative"
AT_MOST = f"at most {MAX_MILES:,.0f} miles"
SHARE_SETTING = "validation.max_invalid_row_share"


def broken_rules(pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> dict[str, np.ndarray]:
    """For each rule, which rides break it; NaN stands for a missing value."""
    import numpy as np

    broken = {}
    for name, values in zip(ZONE_FIELDS, (pickup, dropoff)):
        zones = np.asarray(values, dtype=np.float64)
        missing = np.isnan(zones)
        broken[f"{name} {NOT_NULL}"] = missing
        broken[f"{name} {ZONE_RULE}"] = ~missing & ~(
            (zones >= MIN_ZONE) & (zones <= MAX_ZONE) & (zones == np.floor(zones)))
    miles = np.asarray(distance, dtype=np.float64)
    missing = np.isnan(miles)
    broken[f"{DISTANCE_FIELD} {NOT_NULL}"] = missing
    broken[f"{DISTANCE_FIELD} {NOT_NEGATIVE}"] = miles < 0
    broken[f"{DISTANCE_FIELD} {AT_MOST}"] = miles > MAX_MILES
    return broken


def valid(pickup: np.ndarray, dropoff: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Which rides keep every rule."""
    return _keep(broken_rules(pickup, dropoff, distance))


def _keep(rules: dict[str, np.ndarray]) -> np.ndarray:
    import numpy as np

    return ~np.logical_or.reduce(list(rules.values()))


def table_columns(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A table's zones and distance as float arrays, NaN where a value is missing."""
    import numpy as np
    import pyarrow as pa

    return tuple(np.asarray(table[name].cast(pa.float64()).fill_null(np.nan).to_numpy(), dtype=np.float64)
                 for name in (*ZONE_FIELDS, DISTANCE_FIELD))


@dataclass
class SetAside:
    """The rides of a month left out because they break a rule, counted per rule."""

    rows: int = 0
    rides: int = 0
    broken: dict[str, int] = field(default_factory=dict)

    def split(self, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """The valid rides of `table` and the mask that chose them; counts what it left out."""
        import pyarrow as pa

        rules = broken_rules(*table_columns(table))
        keep = _keep(rules)
        self.rows += table.num_rows
        self.rides += int(table.num_rows - keep.sum())
        for rule, mask in rules.items():
            if mask.any():
                self.broken[rule] = self.broken.get(rule, 0) + int(mask.sum())
        return (table if keep.all() else table.filter(pa.array(keep))), keep

    def reasons(self) -> str:
        """`PULocationID not null: 1, trip_distance at most 1,000,000 miles: 2`."""
        return ", ".join(f"{rule}: {count:,}" for rule, count in self.broken.items())

    def summary(self) -> str:
        """`set aside 3 of 64,575 rides that break the ride rules (...)`, or '' when none was."""
        if not self.rides:
            return ""
        return f"set aside {self.rides:,} of {self.rows:,} rides that break the ride rules ({self.reasons()})"

    def check(self, max_share: float, what: str) -> None:
        """DataQualityError when a rule's share of broken rides passes `max_share` (as `taxipipe run`'s rules)."""
        over = [rule for rule, count in self.broken.items() if count / max(self.rows, 1) > max_share]
        if over:
            raise DataQualityError(
                f"{what}: {self.rides:,} of {self.rows:,} rides break the ride rules ({self.reasons()}), more "
                f"than {SHARE_SETTING} ({max_share:g} per rule) allows; fix the month or raise that share")
