"""The data quality rules and their report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from taxipipe.quality import check_trips
from taxipipe.tlc import read_trips
from tests.helpers import TlcServer, cli_data_flags, run_cli
from tests.faults import FAST, one_sentence_failure, served_folder


def sample(tlc_dir: Path, rows: int = 200) -> pd.DataFrame:
    return read_trips(tlc_dir / "green_tripdata_2021-01.parquet", "green").to_pandas().head(rows).copy()


def test_real_month_passes_every_rule(tlc_dir: Path) -> None:
    frame = read_trips(tlc_dir / "green_tripdata_2021-01.parquet", "green").to_pandas()
    report = check_trips(frame, "2021-01", 0.9, 0.0)
    assert report.passed and report.rows == 76_518
    assert len(report.rules) >= 8


def test_failed_rules_are_named_with_counts(tlc_dir: Path) -> None:
    frame = sample(tlc_dir)
    frame.loc[:4, "PULocationID"] = 300
    frame.loc[:2, "trip_distance"] = -1.0
    frame.loc[10:11, "dropoff_datetime"] = pd.NaT
    report = check_trips(frame, "bad", 0.9, 0.0)
    assert not report.passed
    failed = {rule.rule: rule.failed_rows for rule in report.failures()}
    assert failed == {"PULocationID in 1..265": 5, "trip_distance not negative": 3, "dropoff_datetime not null": 2}
    assert "PULocationID in 1..265: 5 of 200 rows" in report.summary()


def test_tolerated_share_and_frame_rules(tlc_dir: Path) -> None:
    frame = sample(tlc_dir)
    frame.loc[:1, "DOLocationID"] = 0
    assert check_trips(frame, "x", 0.9, 0.05).passed
    frame["dropoff_datetime"] = frame["pickup_datetime"]
    report = check_trips(frame, "x", 0.9, 0.05)
    assert [rule.rule for rule in report.failures()] == ["positive duration in at least 90% of rows"]
    assert report.failures()[0].failed_rows == 200
    empty = check_trips(frame.head(0), "empty", 0.9, 0.0)
    assert "non-empty" in [rule.rule for rule in empty.failures()]


# too few rides after the 1..60 minute filter -------------------------------------------

@pytest.mark.slow
def test_month_without_usable_rides_fails_and_leaves_the_cache(home: Path, tlc_server: TlcServer,
                                                              tlc_dir: Path) -> None:
    trips = pq.read_table(tlc_dir / "green_tripdata_2021-01.parquet")
    late = pc.add(trips["lpep_pickup_datetime"], pa.scalar(7_200_000_000, pa.duration("us")))
    long_rides = trips.set_column(trips.schema.get_field_index("lpep_dropoff_datetime"), "lpep_dropoff_datetime",
                                  late.cast(trips.schema.field("lpep_dropoff_datetime").type))
    template = served_folder(tlc_server, "long-rides", {
        "green_tripdata_2021-01.parquet": long_rides,
        "green_tripdata_2021-02.parquet": tlc_dir / "green_tripdata_2021-02.parquet"})
    result = run_cli("run", *cli_data_flags(home, tlc_server), "--url-template", template, env=FAST)
    one_sentence_failure(result, "green 2021-01", "0 of 76,518 rides", "validation.min_rows", "fewer than 1,000")
    assert "transform" in result.stdout
    downloads = home / "downloads"
    assert not (downloads / "green_tripdata_2021-01.parquet").exists()
    assert not (downloads / "green_tripdata_2021-01.parquet.source").exists()
    assert (downloads / "green_tripdata_2021-02.parquet").exists()


# one rule for a valid ride: the quality report, batch scoring and monitoring count alike -----

def test_the_ride_rules_and_the_quality_rules_count_the_same_rides(tlc_dir: Path) -> None:
    from taxipipe.ride_rules import MAX_MILES, SetAside

    frame = sample(tlc_dir)
    frame.loc[0, "trip_distance"] = 1e39
    frame.loc[1, "trip_distance"] = float("inf")
    frame.loc[2, "trip_distance"] = MAX_MILES
    frame.loc[3, "trip_distance"] = float("nan")
    frame.loc[4:5, "DOLocationID"] = 300
    failed = {rule.rule: rule.failed_rows for rule in check_trips(frame, "bad", 0.9, 0.0).failures()}
    assert failed == {"trip_distance at most 1,000,000 miles": 2, "trip_distance not null": 1,
                      "DOLocationID in 1..265": 2}
    set_aside = SetAside()
    valid, kept = set_aside.split(pa.Table.from_pandas(frame, preserve_index=False))
    assert set_aside.broken == failed and set_aside.rides == 5 and valid.num_rows == 195
    assert kept[2] and not kept[:2].any()
