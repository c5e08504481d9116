"""MLflow's scoring protocol, as `mlflow models serve` answers it on /invocations.

A JSON body holds exactly one of `dataframe_split`, `dataframe_records`, `inputs` or
`instances` (other keys, such as `params`, are ignored); `text/csv` is a header row and one
row per ride; `application/vnd.apache.parquet` is a Parquet file of the rides. Every form becomes the same three arrays as /predict/batch, checked by the same
rules, so a bad ride is named by its row and field (`rows[3].DOLocationID`). Errors carry
MLflow's shape, `{"error_code": "BAD_REQUEST", "message": "..."}`, and its status codes (400;
415 for a content type it does not take); MLflow's own messages are kept where it has one.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taxipipe.serve.rides import RideError, parse_columns, parse_records

if TYPE_CHECKING:
    import numpy as np

ROWS = "rows"
FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")
REQUIRED_INPUT_FORMAT = ("The input must be a JSON dictionary with exactly one of the input fields "
                         "{'dataframe_split', 'dataframe_records', 'inputs', 'instances'}")
PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = ["text/csv", "application/json", PARQUET]
Arrays = tuple["np.ndarray", "np.ndarray", "np.ndarray"]


@dataclass
class ScoringError(Exception):
    """A request MLflow's scoring server would refuse: its message, error code and status."""

    message: str
    status: int = 400
    error_code: str = "BAD_REQUEST"
    media_type: str = "application/json"
    details: dict[str, Any] | None = None

    def body(self) -> str:
        if self.media_type != "application/json":
            return self.message
        return json.dumps({"error_code": self.error_code, "message": self.message, **(self.details or {})})


def invalid(exc: RideError) -> ScoringError:
    """A ride that breaks a rule, in MLflow's shape, with the field, rule and value beside it."""
    status = 413 if exc.status == 413 else 400
    return ScoringError(f"Invalid input. {exc.as_json()['detail']}", status, details=exc.as_json())


def parse(body: bytes, content_type: str | None, limit: int) -> Arrays:
    """The request body as three checked arrays, for a JSON or CSV content type."""
    mime, charset = _content_type(content_type)
    if charset != "utf-8":
        raise ScoringError("The scoring server only supports UTF-8", 415, media_type="text/plain")
    try:
        if mime == "text/csv":
            return parse_csv(body, limit)
        if mime == "application/json":
            return parse_json(body, limit)
        if mime == PARQUET:
            return parse_parquet(body, limit)
    except RideError as exc:
        raise invalid(exc) from None
    raise ScoringError(f"This predictor only supports the following content types: Types: {CONTENT_TYPES}. "
                       f"Got '{content_type}'.", 415, media_type="text/plain")


def _content_type(header: str | None) -> tuple[str, str]:
    """The media type and charset of a Content-Type header; other parameters are refused as MLflow does."""
    parts = [part.strip() for part in (header or "").split(";")]
    parameters = dict(part.partition("=")[::2] for part in parts[1:])
    unexpected = set(parameters) - {"charset"}
    if unexpected:
        raise ScoringError(f"Unrecognized content type parameters: {', '.join(sorted(unexpected))}.", 415,
                           media_type="text/plain")
    return parts[0].lower(), parameters.get("charset", "utf-8").lower()


def parse_json(body: bytes, limit: int) -> Arrays:
    """One of MLflow's four JSON forms as three arrays."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else repr(exc)
        raise ScoringError(f"Invalid input. Ensure that input is a valid JSON formatted string. Error: {reason}") \
            from None
    if not isinstance(payload, dict):
        kind = "a list" if isinstance(payload, list) else f"a {type(payload).__name__}"
        raise ScoringError(f"Invalid input. {REQUIRED_INPUT_FORMAT}. Received {kind}.")
    keys = [key for key in payload if key in FORMATS]
    if len(keys) != 1:
        raise ScoringError(f"{REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {list(payload)}.")
    key = keys[0]
    data = payload[key]
    if key == "dataframe_split":
        return _split(data, limit)
    if key == "dataframe_records":
        if not isinstance(data, list):
            raise ScoringError("Invalid input. Dataframe records format must be a list of records. "
                               f"Got {type(data).__name__}.")
        return parse_records(data, limit, ROWS)
    return _tensor(key, data, limit)


def _split(data: Any, limit: int) -> Arrays:
    """`{"columns": [...], "data": [[...], ...]}` (an `index` is allowed and ignored)."""
    if not isinstance(data, dict):
        raise ScoringError(f"Invalid input. Dataframe split format must be a dictionary. Got {type(data).__name__}.")
    columns, rows = data.get("columns"), data.get("data")
    if not isinstance(columns, list) or not all(isinstance(name, str) for name in columns):
        raise RideError("dataframe_split.columns", "is required: a list of column names")
    if not isinstance(rows, list):
        raise RideError("dataframe_split.data", "is required: a list of rows")
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise RideError(f"{ROWS}[{index}]", f"must be a list of {len(columns)} values, one per column", row)
    return parse_columns({name: [row[at] for row in rows] for at, name in enumerate(columns)}, limit, ROWS)


def _tensor(key: str, data: Any, limit: int) -> Arrays:
    """`inputs`/`instances`: a list of ride objects, an object of columns, or one ride object."""
    if isinstance(data, list):
        return parse_records(data, limit, ROWS)
    if not isinstance(data, dict):
        raise RideError(key, "must be a list of rides or an object of columns", data)
    if all(isinstance(values, list) for values in data.values()):
        return parse_columns(data, limit, ROWS)
    return parse_records([data], limit, ROWS)


def parse_csv(body: bytes, limit: int) -> Arrays:
    """A header row and one row per ride, as `DataFrame.to_csv` writes it (an unnamed index column is ignored)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScoringError(f"Invalid input. Ensure that input is a valid UTF-8 encoded string. Error: '{exc!r}'") \
            from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise RideError("csv", "must start with a header row naming the columns")
    rides = []
    for index, row in enumerate(reader):
        if len(row) != len(header):
            raise RideError(f"{ROWS}[{index}]", f"must have {len(header)} values, one per column", row)
        rides.append({name: _cell(value) for name, value in zip(header, row) if value != ""})
    return parse_records(rides, limit, ROWS)


def parse_parquet(body: bytes, limit: int) -> Arrays:
    """A Parquet file (as `DataFrame.to_parquet` writes it) whose columns include the three fields."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(body))
    except (pa.ArrowException, OSError) as exc:
        raise ScoringError("Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid Parquet "
                           f"Pandas DataFrame produced using the `pandas.DataFrame.to_parquet()` method. Error: "
                           f"'{exc}'") from None
    return parse_columns({name: table[name].to_pylist() for name in table.column_names}, limit, ROWS)


def _cell(text: str) -> Any:
    """A CSV value as JSON would carry it: 74 -> int, 2.5 -> float, anything else stays text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
