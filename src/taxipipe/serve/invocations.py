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
import itertools
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taxipipe.serve.edge import body_limit
from taxipipe.serve.rides import (DISTANCE_FIELD, ZONE_FIELDS, RideError, check_count, parse_columns,
                                  parse_records)

if TYPE_CHECKING:
    import numpy as np

ROWS = "rows"
FIELDS = (*ZONE_FIELDS, DISTANCE_FIELD)
FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")
REQUIRED_INPUT_FORMAT = ("The input must be a JSON dictionary with exactly one of the input fields "
                         "{'dataframe_split', 'dataframe_records', 'inputs', 'instances'}")
PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = ["text/csv", "application/json", PARQUET]
#: What json.loads refuses besides bad syntax: a whole number longer than Python converts.
TOO_MANY_DIGITS = f"must not hold a whole number of more than {sys.get_int_max_str_digits():,} digits"
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
        if isinstance(exc, RecursionError):
            reason = "it is nested too deeply"
        elif isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
            reason = repr(exc)
        else:
            reason = f"it {TOO_MANY_DIGITS}"
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
    """A header row and one row per ride, as `DataFrame.to_csv` writes it (an unnamed index column is ignored).

    Rows are counted before any is decoded: a body of more than `limit` rides is refused
    without building them.
    """
    lines = body.count(b"\n") + (not body.endswith(b"\n")) - 1
    if lines > limit:
        check_count(lines, limit, ROWS)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScoringError(f"Invalid input. Ensure that input is a valid UTF-8 encoded string. Error: '{exc!r}'") \
            from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header or not set(header) & set(FIELDS):
            raise RideError("csv", f"must start with a header row naming the columns {', '.join(FIELDS)}",
                            header)
        rides = []
        for index, row in enumerate(itertools.islice(reader, limit + 1)):
            if len(row) != len(header):
                raise RideError(f"{ROWS}[{index}]", f"must have {len(header)} values, one per column", row)
            rides.append({name: _cell(value) for name, value in zip(header, row) if value != ""})
    except csv.Error as exc:
        raise ScoringError(f"Invalid input. The CSV body cannot be read: {exc}") from None
    return parse_records(rides, limit, ROWS)


def parse_parquet(body: bytes, limit: int) -> Arrays:
    """A Parquet file (as `DataFrame.to_parquet` writes it) whose columns include the three fields.

    Only the footer is read before the rides are counted and the three columns' sizes and
    types checked, so a small file that decodes to millions of rows (a Parquet bomb) is
    refused without being decoded: memory stays within what `limit` rides take.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(pa.BufferReader(body))
        metadata = parquet.metadata
        rows = max(metadata.num_rows, sum(metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)))
        check_count(rows, limit, ROWS)
        present = [field for field in FIELDS if field in parquet.schema_arrow.names]
        for field in FIELDS:
            if field not in present:
                raise RideError(f"{ROWS}[0].{field}", "is required")
        _check_parquet_columns(parquet, limit)
        table = parquet.read(columns=present)
    except (pa.ArrowException, OSError) as exc:
        raise ScoringError("Failed to parse input as a Pandas DataFrame. Ensure that the input is a valid Parquet "
                           f"Pandas DataFrame produced using the `pandas.DataFrame.to_parquet()` method. Error: "
                           f"'{exc}'") from None
    return parse_columns({name: table[name].to_pylist() for name in table.column_names}, limit, ROWS)


def _check_parquet_columns(parquet: Any, limit: int) -> None:
    """413 when the three columns would decode to more than a body may hold; 400 for a column not of numbers.

    Numbers take a fixed size per row; text or lists could decode a few bytes to gigabytes
    (one long value repeated through a dictionary), so they are refused from the schema.
    """
    import pyarrow as pa

    schema = parquet.schema_arrow
    for field in FIELDS:
        kind = schema.field(field).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
            raise RideError(f"{ROWS}.{field}", "must be a column of integers or floating-point numbers", str(kind))
    metadata = parquet.metadata
    wanted = {index for index in range(metadata.num_columns) if metadata.schema.column(index).path in FIELDS}
    decoded = sum(metadata.row_group(group).column(index).total_uncompressed_size
                  for group in range(metadata.num_row_groups) for index in wanted)
    most = body_limit(limit)
    if decoded > most:
        raise RideError(ROWS, f"must decode to at most {most:,} bytes (serve.batch_limit rides); the Parquet "
                        f"file's columns hold {decoded:,}", status=413)


def _cell(text: str) -> Any:
    """A CSV value as JSON would carry it: 74 -> int, 2.5 -> float, anything else stays text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
