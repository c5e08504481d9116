"""The data steps a row group at a time: clean rides and encoded features as parquet.

Memory stays bounded by one row group whatever the window's length. Rides stay in the order
of the months and of their files, so a window of one month gives the rows a whole-month read
gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from taxipipe.features import MODEL_COLUMNS, TARGET
from taxipipe.safety.atomic import atomic_path

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

#: Schema metadata key of a clean file: rides read and kept per month, in window order.
MONTHS_KEY = b"taxipipe.months"


def write_clean(sources: Sequence[tuple[str, Path]], color: str, dest: Path) -> dict[str, dict[str, int]]:
    """Rides of 1..60 minutes of every (month label, download) into one parquet file.

    Returns, per month, the rides read (`rows_in`) and kept (`rows`); the same figures go into
    the file's key-value metadata, so later steps can log them without reading the rows.
    """
    import pyarrow.parquet as pq

    from taxipipe.features import add_duration
    from taxipipe.tlc import iter_trips

    months: dict[str, dict[str, int]] = {}
    tables = _clean_tables(sources, color, months, iter_trips, add_duration)
    with atomic_path(dest) as tmp:
        first = next(tables)
        with pq.ParquetWriter(tmp, first.schema) as writer:
            writer.write_table(first)
            for table in tables:
                writer.write_table(table)
            writer.add_key_value_metadata({MONTHS_KEY: json.dumps(months)})
    return months


def _clean_tables(sources: Sequence[tuple[str, Path]], color: str, months: dict[str, dict[str, int]],
                  iter_trips: Any, add_duration: Any) -> Iterator[pa.Table]:
    import pyarrow as pa

    schema = None
    for label, path in sources:
        counts = months.setdefault(label, {"rows_in": 0, "rows": 0})
        for trips in iter_trips(path, color):
            rides = add_duration(trips)
            counts["rows_in"] += trips.num_rows
            counts["rows"] += rides.num_rows
            schema = schema or rides.schema
            yield rides
    if schema is None:
        yield pa.table({name: [] for name in [*MODEL_COLUMNS, TARGET]})


def month_counts(path: Path) -> dict[str, dict[str, int]]:
    """The per-month counts `write_clean` recorded in a clean file."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata.metadata or {}
    return json.loads(metadata.get(MONTHS_KEY, b"{}"))


def fit_encoder(clean: Path) -> Any:
    """The categorical encoder of a clean file, fitted a row group at a time.

    The same encoder `Encoder.fit("categorical", whole_frame)` makes: the sorted zones seen.
    """
    import numpy as np
    import pyarrow.parquet as pq

    from taxipipe.features import Encoder

    source = pq.ParquetFile(clean)
    pickup: np.ndarray = np.empty(0, dtype=np.int32)
    dropoff: np.ndarray = np.empty(0, dtype=np.int32)
    for group in range(source.num_row_groups):
        table = source.read_row_group(group, columns=["PULocationID", "DOLocationID"])
        pickup = np.union1d(pickup, table["PULocationID"].to_numpy())
        dropoff = np.union1d(dropoff, table["DOLocationID"].to_numpy())
    return Encoder("categorical", {"pickup_zones": pickup.tolist(), "dropoff_zones": dropoff.tolist()})


def write_encoded(clean: Path, encoder: Any, dest: Path) -> int:
    """Encode a clean file into feature columns plus the target, row group by row group.

    Returns the rows written. Column names are the encoder's feature names and `duration`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(clean)
    names = encoder.feature_names
    schema = pa.schema([*[(name, pa.float32()) for name in names], (TARGET, pa.float64())])
    rows = 0
    with atomic_path(dest) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for group in range(source.num_row_groups):
            rides = source.read_row_group(group).to_pandas()
            matrix = encoder.transform(rides)
            columns = [pa.array(matrix[:, i]) for i in range(len(names))]
            writer.write_table(pa.table([*columns, pa.array(rides[TARGET].to_numpy())], schema=schema))
            rows += len(rides)
    return rows


def read_encoded(path: Path, group: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, one column per feature) and target of an encoded file or row group."""
    import numpy as np
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    table = source.read() if group is None else source.read_row_group(group)
    names = [name for name in table.column_names if name != TARGET]
    matrix = np.column_stack([table[name].to_numpy() for name in names]).astype(np.float32, copy=False)
    return matrix, table[TARGET].to_numpy()
