"""TLC sources: the URL template, download into a cache, and schema normalisation."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator
from urllib.parse import unquote, urlparse

from taxipipe.errors import (
    ConfigError,
    CorruptDataError,
    DataNotFoundError,
    NetworkError,
    SchemaError,
)
from taxipipe.safety.interrupts import raise_if_signalled
from taxipipe.layout import source_record
from taxipipe.safety.atomic import atomic_path, write_text_atomic
from taxipipe.partition import Partition

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

URL_SETTING_HINT = "point data.url_template (--url-template or TAXIPIPE_DATA__URL_TEMPLATE) at a mirror"
CHUNK_BYTES = 1 << 20

#: The columns the model needs, by their name after normalisation, with their arrow types.
PICKUP, DROPOFF = "pickup_datetime", "dropoff_datetime"
LOCATION_COLUMNS = ("PULocationID", "DOLocationID")


TEMPLATE_FIELDS = ("color", "year", "month")
#: The URL schemes taxipipe reads (besides local paths): downloads over HTTP(S), copies of files.
READ_SCHEMES = ("http", "https", "file")


def scheme_problem(url: str) -> str | None:
    """What is wrong with the scheme of a URL or template, or None (a local path has none)."""
    scheme = urlparse(url).scheme
    if scheme and scheme.lower() not in READ_SCHEMES:
        return (f"it uses {scheme}://, which taxipipe does not read: give an http://, https:// or "
                "file:// URL, or a local path")
    return None


def template_problem(template: str) -> str | None:
    """What is wrong with a URL template, or None: it must use {color}, {year} and {month}
    (a format spec such as {month:02d} is fine) and nothing else."""
    import string

    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return f"it is not a valid template ({exc}; write a literal brace as {{{{ or }}}})"
    unknown = sorted({name or "{}" for name in names} - set(TEMPLATE_FIELDS))
    if unknown:
        return f"it uses unknown placeholder(s) {', '.join(unknown)}; only {{color}}, {{year}} and {{month}} exist"
    if problem := scheme_problem(template):
        return problem
    missing = [name for name in TEMPLATE_FIELDS if name not in names]
    if missing:
        return (f"it lacks {', '.join('{' + name + '}' for name in missing)}, so different months would "
                "share one file")
    try:
        template.format(color="green", year=2021, month=1)
    except (ValueError, TypeError) as exc:
        return f"a placeholder's format is invalid ({exc})"
    return None


def source_url(template: str, partition: Partition) -> str:
    """The URL (or local path) of one TLC month."""
    return template.format(color=partition.color, year=partition.year, month=partition.month)


def recorded_source(path: Path) -> str | None:
    """The URL a cached download came from (None when unknown)."""
    try:
        return source_record(path).read_text().strip() or None
    except OSError:
        return None


def forget(path: Path) -> None:
    """Remove a cached download and the record of its source."""
    source_record(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def datetime_columns(color: str) -> tuple[str, str]:
    """The pickup and dropoff column names of a colour's layout (lpep_ green, tpep_ yellow)."""
    prefix = {"green": "lpep", "yellow": "tpep"}[color]
    return f"{prefix}_pickup_datetime", f"{prefix}_dropoff_datetime"


def fetch(url: str, dest: Path, retries: int = 3, backoff_seconds: float = 1.0,
          check: Callable[..., None] | None = None) -> bool:
    """Make `dest` a complete copy of `url`; return False when the cached copy was reused.

    `url` is http(s), file:// or a local path (another scheme is a ConfigError). The copy
    lands atomically and is checked (`check(path, source=...)` raising CorruptDataError;
    default: a readable parquet file) before it takes the real name. A cached copy is reused
    only when it came from the same URL: `dest.source` records it once the copy is in place
    (a copy without that record, or from another URL, is fetched again).
    """
    if problem := scheme_problem(url):
        raise ConfigError(f"cannot fetch {url}: {problem}")
    check = check or check_parquet
    if dest.exists() and recorded_source(dest) == url:
        try:
            check(dest)
            return False
        except CorruptDataError:
            pass
    forget(dest)
    with atomic_path(dest) as tmp:
        if urlparse(url).scheme.lower() in {"http", "https"}:
            _download(url, tmp, retries, backoff_seconds)
        else:
            _copy_local(url, tmp)
        check(tmp, source=url)
    write_text_atomic(source_record(dest), url + "\n")
    return True


def _copy_local(url: str, tmp: Path) -> None:
    path = Path(unquote(urlparse(url).path)) if urlparse(url).scheme.lower() == "file" else Path(url)
    if not path.is_file():
        raise DataNotFoundError(f"no TLC file at {path}; check data.url_template and the month")
    shutil.copyfile(path, tmp)


def _download(url: str, tmp: Path, retries: int, backoff_seconds: float) -> None:
    """Stream `url` into `tmp`, retrying network errors and 5xx answers with backoff."""
    import requests

    for attempt in range(retries + 1):
        try:
            with requests.get(url, stream=True, timeout=(10, 60)) as response:
                if response.status_code == 404:
                    raise DataNotFoundError(
                        f"there is no TLC file at {url} (HTTP 404): that colour and month "
                        "is not published"
                    )
                if response.status_code >= 500:
                    raise _Retryable(f"the server answered HTTP {response.status_code}")
                if response.status_code != 200:
                    raise NetworkError(f"download of {url} failed: HTTP {response.status_code}")
                _stream_to_file(response, tmp)
                return
        except (requests.ConnectionError, requests.Timeout, _Retryable) as exc:
            if attempt == retries:
                reason = exc if isinstance(exc, _Retryable) else "the network or server is unreachable"
                raise NetworkError(
                    f"cannot download {url} after {retries + 1} attempt{'s' if retries else ''} ({reason}); "
                    f"check the network or {URL_SETTING_HINT}"
                ) from None
            delay = backoff_seconds * 2**attempt
            raise_if_signalled()
            print(f"⚠️  download failed ({exc.__class__.__name__}), retrying in {delay:.1f}s", file=sys.stderr)
            time.sleep(delay)


class _Retryable(Exception):
    """A transient server answer worth another attempt."""


def _stream_to_file(response, tmp: Path) -> None:
    import requests
    from tqdm import tqdm

    expected = int(response.headers.get("Content-Length") or 0)
    written = 0
    try:
        with open(tmp, "wb") as out, tqdm(
            total=expected or None,
            unit="B",
            unit_scale=True,
            desc=Path(urlparse(response.url).path).name,
            disable=None,
            file=sys.stderr,
        ) as bar:
            for chunk in response.iter_content(CHUNK_BYTES):
                raise_if_signalled()
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except requests.RequestException as exc:
        raise _Retryable(f"the transfer broke off after {written} bytes") from exc
    if expected and written != expected:
        raise _Retryable(f"the transfer ended after {written} of {expected} bytes")


def check_parquet(path: Path, source: str | None = None) -> None:
    """Raise CorruptDataError unless `path` has a readable parquet footer."""
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(path).metadata
    except Exception:
        raise CorruptDataError(
            f"{source or path} is not a readable parquet file (truncated or corrupt); "
            "delete it or fetch it again"
        ) from None


def trip_columns(color: str) -> dict[str, tuple[str, pa.DataType]]:
    """The source columns the pipeline reads, each with its normalised name and arrow type."""
    import pyarrow as pa

    pickup, dropoff = datetime_columns(color)
    return {
        pickup: (PICKUP, pa.timestamp("us")),
        dropoff: (DROPOFF, pa.timestamp("us")),
        "PULocationID": ("PULocationID", pa.int32()),
        "DOLocationID": ("DOLocationID", pa.int32()),
        "trip_distance": ("trip_distance", pa.float64()),
    }


def open_trips(path: Path, color: str) -> pq.ParquetFile:
    """Open a TLC month for reading, checking that it holds the colour's `trip_columns`."""
    import pyarrow.parquet as pq

    try:
        trips = pq.ParquetFile(path)
        names = trips.schema_arrow.names
    except Exception:
        raise CorruptDataError(f"{path} is not a readable parquet file (truncated or corrupt)") from None
    missing = [name for name in trip_columns(color) if name not in names]
    if missing:
        raise SchemaError(
            f"{path.name} lacks required column(s) {', '.join(missing)} for the {color} layout "
            f"(it has {', '.join(names)})"
        )
    return trips


def read_trips(path: Path, color: str) -> pa.Table:
    """Read the model's columns of a TLC month with one schema whatever the month's writer.

    Returns columns pickup_datetime, dropoff_datetime (timestamp[us]), PULocationID,
    DOLocationID (int32) and trip_distance (float64). Extra columns in the file are ignored.
    """
    trips = open_trips(path, color)
    try:
        table = trips.read(columns=list(trip_columns(color)))
    except Exception as exc:
        raise CorruptDataError(f"{path} cannot be read ({exc}); it is truncated or corrupt") from None
    return normalise_trips(table, color, path.name)


def normalise_trips(table: pa.Table, color: str, source: str) -> pa.Table:
    """Rename and cast the `trip_columns` of a table (or one batch of it) read from `source`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = trip_columns(color)
    columns = []
    for source_name, (name, arrow_type) in wanted.items():
        column = table[source_name]
        try:
            if pa.types.is_timestamp(arrow_type) and pa.types.is_timestamp(column.type):
                column = column.cast(arrow_type, safe=False)
            else:
                column = pc.cast(column, arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise SchemaError(
                f"column {source_name} of {source} has type {column.type}, which cannot be "
                f"read as {arrow_type}"
            ) from None
        columns.append(column)
    return pa.table(columns, names=[name for name, _ in wanted.values()])


def iter_trips(path: Path, color: str) -> Iterator[pa.Table]:
    """`read_trips` one row group at a time: memory bounded by a row group, not the month."""
    trips = open_trips(path, color)
    for group in range(trips.num_row_groups):
        try:
            table = trips.read_row_group(group, columns=list(trip_columns(color)))
        except Exception as exc:
            raise CorruptDataError(f"{path} cannot be read ({exc}); it is truncated or corrupt") from None
        yield normalise_trips(table, color, path.name)
