"""Raw rides from JSON to three arrays, each value checked before it reaches the model by the
rules of a valid ride (`taxipipe.ride_rules`), which batch scoring and monitoring use too.

A plain loop over the parsed JSON is several times faster than a pydantic model per ride
and names the first bad value exactly: its field, the rule it breaks and its index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taxipipe.ride_rules import DISTANCE_FIELD, MAX_MILES, MAX_ZONE, MIN_ZONE, ZONE_FIELDS, valid

if TYPE_CHECKING:
    import numpy as np


@dataclass
class RideError(Exception):
    """A request a user got wrong: which field, which rule, the value given; `status` is the HTTP answer."""

    field: str
    rule: str
    value: Any = None
    status: int = 422

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"

    def as_json(self) -> dict[str, Any]:
        return {"detail": f"{self.field} {self.rule}", "field": self.field, "rule": self.rule,
                "input": self.value if _jsonable(self.value) else _shown(self.value)}


def _shown(value: Any, most: int = 200) -> str:
    """A value that JSON cannot carry as is, as text of at most `most` characters."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"a {type(value).__name__} nested too deeply to show"
    return text if len(text) <= most else text[:most] + "..."


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int)) or (
        isinstance(value, float) and math.isfinite(value))


def _zone(ride: dict[str, Any], name: str, where: str) -> int:
    if name not in ride:
        raise RideError(where + name, "is required")
    value = ride[name]
    kind = type(value)
    if kind is float and value.is_integer():
        value = int(value)
    elif kind is not int:
        raise RideError(where + name, "must be a whole number (a zone id)", value)
    if not MIN_ZONE <= value <= MAX_ZONE:
        raise RideError(where + name, f"must be a zone id in {MIN_ZONE}..{MAX_ZONE}", value)
    return value


def _distance(ride: dict[str, Any], where: str) -> float:
    if DISTANCE_FIELD not in ride:
        raise RideError(where + DISTANCE_FIELD, "is required")
    value = ride[DISTANCE_FIELD]
    if type(value) not in (float, int):
        raise RideError(where + DISTANCE_FIELD, "must be a number (miles)", value)
    try:
        value = float(value)
    except OverflowError:
        raise RideError(where + DISTANCE_FIELD, "must be a finite number", value) from None
    if not math.isfinite(value):
        raise RideError(where + DISTANCE_FIELD, "must be a finite number", value)
    if value < 0:
        raise RideError(where + DISTANCE_FIELD, "must not be negative", value)
    if value > MAX_MILES:
        raise RideError(where + DISTANCE_FIELD, f"must be at most {MAX_MILES:,.0f} miles", value)
    return value


def parse_ride(ride: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One ride object as three one-element arrays; extra fields are ignored."""
    if not isinstance(ride, dict):
        raise RideError("body", "must be a JSON object with PULocationID, DOLocationID and trip_distance")
    return _arrays([_zone(ride, ZONE_FIELDS[0], "")], [_zone(ride, ZONE_FIELDS[1], "")], [_distance(ride, "")])


def parse_batch(body: Any, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`{"rides": [...]}` as three arrays; 413 beyond `limit` rides, 422 for anything else wrong."""
    if not isinstance(body, dict) or "rides" not in body:
        raise RideError("rides", "is required: send {\"rides\": [ride, ...]}")
    rides = body["rides"]
    if not isinstance(rides, list):
        raise RideError("rides", "must be a list of rides")
    return parse_records(rides, limit, "rides")


def check_count(count: int, limit: int, name: str) -> None:
    """422 for no rides, 413 for more than `limit` (serve.batch_limit)."""
    if not count:
        raise RideError(name, "must hold at least one ride")
    if count > limit:
        raise RideError(name, f"must hold at most {limit:,} rides (serve.batch_limit); got {count:,}", status=413)


def parse_records(rides: list[Any], limit: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list of ride objects as three arrays; a bad one is named `{name}[index].field`."""
    check_count(len(rides), limit, name)
    try:
        columns = [[ride[field] for ride in rides] for field in (*ZONE_FIELDS, DISTANCE_FIELD)]
    except (KeyError, TypeError):
        return _check_each(rides, name)
    return _checked_columns(*columns) or _check_each(rides, name)


def parse_columns(columns: dict[str, list[Any]], limit: int, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns of equal length (name -> values) as three arrays; a bad value is named `{name}[row].field`."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise RideError(name, "must have columns of equal length", sorted(lengths))
    count = lengths.pop() if lengths else 0
    check_count(count, limit, name)
    fields = (*ZONE_FIELDS, DISTANCE_FIELD)
    if all(field in columns for field in fields):
        checked = _checked_columns(*(columns[field] for field in fields))
        if checked is not None:
            return checked
    return _check_each([{key: values[row] for key, values in columns.items()} for row in range(count)], name)


def _checked_columns(pickup: list[Any], dropoff: list[Any], distance: list[Any]) -> tuple[np.ndarray, ...] | None:
    """The fast path: three columns checked with numpy at once; None when any value breaks a rule.

    A batch of 1,000 good rides is checked in a fraction of the per-ride loop's time; a bad
    one goes through `_check_each`, which names the first bad value.
    """
    import numpy as np

    kinds = set(map(type, pickup)) | set(map(type, dropoff)) | set(map(type, distance))
    if not kinds <= {int, float}:
        return None
    try:
        zones = np.array([pickup, dropoff], dtype=np.float64)
        miles = np.array(distance, dtype=np.float64)
    except OverflowError:
        return None
    if not np.all(valid(zones[0], zones[1], miles)):
        return None
    codes = zones.astype(np.int64)
    return codes[0], codes[1], miles


def _check_each(rides: list[Any], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check ride by ride; raises RideError at the first bad value."""
    pickup, dropoff, distance = [], [], []
    for index, ride in enumerate(rides):
        where = f"{name}[{index}]."
        if not isinstance(ride, dict):
            raise RideError(f"{name}[{index}]", "must be a JSON object", ride)
        pickup.append(_zone(ride, ZONE_FIELDS[0], where))
        dropoff.append(_zone(ride, ZONE_FIELDS[1], where))
        distance.append(_distance(ride, where))
    return _arrays(pickup, dropoff, distance)


def _arrays(pickup: list[int], dropoff: list[int], distance: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import numpy as np

    return (np.array(pickup, dtype=np.int64), np.array(dropoff, dtype=np.int64),
            np.array(distance, dtype=np.float64))
