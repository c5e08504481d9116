"""`taxipipe predict`: score every ride of a month with the champion, one row group at a time.

The month is read in record batches and each batch's predictions are appended to the
output, so a 3M-row month needs the memory of one batch, not of the month. Rides that break
the rules of a valid ride (`ride_rules`, the ones serving refuses) are set aside and counted;
the month fails when a rule's share passes validation.max_invalid_row_share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxipipe.config import Settings
from taxipipe.errors import NoChampionError
from taxipipe.partition import Partition
from taxipipe.ride_rules import SetAside

if TYPE_CHECKING:
    import pyarrow as pa

BATCH_ROWS = 262_144


@dataclass(frozen=True)
class BatchResult:
    """What one scoring run wrote and how well it did where the month has actual durations."""

    partition: Partition
    path: Path
    rows: int
    seconds: float
    model_name: str
    model_version: int
    rmse: float | None
    rmse_rows: int
    set_aside: SetAside

    def summary(self) -> str:
        score = (f"RMSE {self.rmse:.4f} on the {self.rmse_rows:,} rides of 1..60 minutes"
                 if self.rmse is not None else "no rides of 1..60 minutes to compute an RMSE on")
        aside = f"\n   ⚠️  {self.set_aside.summary()}" if self.set_aside.rides else ""
        return (f"🧮 {self.rows:,} rides of {self.partition.color} {self.partition.label} scored with "
                f"{self.model_name} v{self.model_version} in {self.seconds:.1f} s: {score}{aside}\n   -> {self.path}")


def predictions_path(settings: Settings, partition: Partition) -> Path:
    from taxipipe.layout import Home

    return Home(settings.home).predictions(partition)


def month_file(settings: Settings, partition: Partition) -> Path:
    """The month's file in the download cache, fetched from the configured source if missing."""
    from taxipipe.layout import Home
    from taxipipe.tlc import fetch, source_url

    path = Home(settings.home).download(partition)
    data = settings.data
    fetch(source_url(data.url_template, partition), path, data.download_retries, data.download_backoff_seconds)
    return path


def load_champion(settings: Settings) -> Any:
    """The champion as served (`champion.Loaded`), or NoChampionError naming the fix."""
    from taxipipe import tracking
    from taxipipe.serve.champion import NO_CHAMPION, load_version

    name = settings.mlflow.model_name
    version = tracking.champion_version(tracking.client(settings), name)
    if version is None:
        raise NoChampionError(NO_CHAMPION.format(alias=tracking.CHAMPION, name=name))
    return load_version(settings, name, version)


def score_month(settings: Settings) -> BatchResult:
    """Score the configured month (data.color/year/month) into {home}/predictions/{color}/{YYYY-MM}.parquet."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from taxipipe.safety.atomic import atomic_path, remove_stale_parts
    from taxipipe.tlc import open_trips, trip_columns

    started = time.perf_counter()
    remove_stale_parts(settings.home)
    partition = settings.partition
    champion = load_champion(settings)
    source = month_file(settings, partition)
    trips = open_trips(source, partition.color)
    target = predictions_path(settings, partition)
    rows = rmse_rows = 0
    squared = 0.0
    set_aside = SetAside()
    with atomic_path(target) as tmp:
        writer: pq.ParquetWriter | None = None
        for batch in trips.iter_batches(batch_size=BATCH_ROWS, columns=list(trip_columns(partition.color))):
            scored, errors = _score(batch, partition.color, source.name, champion, set_aside)
            if writer is None:
                writer = pq.ParquetWriter(tmp, scored.schema)
            writer.write_table(scored)
            rows += scored.num_rows
            rmse_rows += len(errors)
            squared += float(np.sum(errors * errors))
        if writer is None:
            columns = trips.schema_arrow
            empty = pa.RecordBatch.from_pylist([], schema=pa.schema([columns.field(name) for name in
                                                                     trip_columns(partition.color)]))
            schema = _score(empty, partition.color, source.name, champion, SetAside())[0].schema
            writer = pq.ParquetWriter(tmp, schema)
        writer.close()
        set_aside.check(settings.validation.max_invalid_row_share, f"{partition.color} {partition.label}")
    rmse = float(np.sqrt(squared / rmse_rows)) if rmse_rows else None
    return BatchResult(partition, target, rows, time.perf_counter() - started, champion.name,
                       champion.version, rmse, rmse_rows, set_aside)


def _score(batch: pa.RecordBatch, color: str, source: str, champion: Any, set_aside: SetAside) -> tuple[pa.Table, Any]:
    """The predictions table of one batch's valid rides (the others go to `set_aside`), and the
    errors of its rides of 1..60 minutes."""
    import numpy as np
    import pyarrow as pa

    from taxipipe.features import MAX_MINUTES, MIN_MINUTES, duration_minutes
    from taxipipe.tlc import PICKUP, normalise_trips

    first_index = set_aside.rows
    trips, kept = set_aside.split(normalise_trips(pa.Table.from_batches([batch]), color, source))
    columns = {name: trips[name].to_numpy() for name in ("PULocationID", "DOLocationID", "trip_distance")}
    predicted = champion.predict(columns["PULocationID"], columns["DOLocationID"], columns["trip_distance"])
    actual = duration_minutes(trips)
    actual_values = actual.to_numpy(zero_copy_only=False)
    in_range = (actual_values >= MIN_MINUTES) & (actual_values <= MAX_MINUTES)
    table = pa.table({
        "ride_index": pa.array(np.arange(first_index, first_index + len(kept), dtype=np.int64)[kept]),
        PICKUP: trips[PICKUP],
        "PULocationID": trips["PULocationID"],
        "DOLocationID": trips["DOLocationID"],
        "trip_distance": trips["trip_distance"],
        "predicted_minutes": pa.array(predicted, type=pa.float32()),
        "actual_minutes": actual,
        "model_version": pa.array(np.full(trips.num_rows, champion.version, dtype=np.int32)),
    })
    return table, actual_values[in_range] - predicted[in_range].astype(np.float64)
