"""`taxipipe predict`: a month scored by the champion into {home}/predictions, streamed by batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from taxipipe.config import load_settings
from taxipipe.features import MAX_MINUTES, MIN_MINUTES, TARGET, add_duration
from taxipipe.serve import batch
from taxipipe.tlc import read_trips
from tests.helpers import TlcServer, cli_data_flags, run_cli, store_uri


@pytest.mark.slow
def test_predict_scores_every_ride_like_the_pyfunc(champion_home: Path, tlc_server: TlcServer,
                                                   tlc_dir: Path) -> None:
    import mlflow.pyfunc

    from taxipipe import tracking

    result = run_cli("predict", *cli_data_flags(champion_home, tlc_server, month=2))
    assert result.returncode == 0, result.stderr
    written = champion_home / "predictions" / "green" / "2021-02.parquet"
    assert "64,572 rides of green 2021-02 scored with nyc-taxi-duration v1" in result.stdout
    assert "RMSE 6.0507 on the 61,921 rides of 1..60 minutes" in result.stdout
    assert str(written) in result.stdout
    scored = pq.read_table(written).to_pandas()
    source = pq.read_table(tlc_dir / "green_tripdata_2021-02.parquet").to_pandas()
    assert len(scored) == len(source) == 64_572
    assert list(scored.columns) == ["ride_index", "pickup_datetime", "PULocationID", "DOLocationID",
                                    "trip_distance", "predicted_minutes", "actual_minutes", "model_version"]
    assert (scored["ride_index"].to_numpy() == np.arange(len(source))).all()
    assert (scored["model_version"] == 1).all()
    settings = load_settings(overrides={"home": str(champion_home)})
    tracking.client(settings)
    pyfunc = mlflow.pyfunc.load_model("models:/nyc-taxi-duration@champion")
    expected = pyfunc.predict(source[["PULocationID", "DOLocationID", "trip_distance"]])
    assert np.array_equal(scored["predicted_minutes"].to_numpy(), expected)
    minutes = (source["lpep_dropoff_datetime"] - source["lpep_pickup_datetime"]).dt.total_seconds() / 60
    assert np.allclose(scored["actual_minutes"], minutes)
    actual = scored["actual_minutes"].to_numpy()
    trained_on = add_duration(read_trips(tlc_dir / "green_tripdata_2021-02.parquet", "green"))[TARGET].to_numpy()
    assert np.array_equal(actual[(actual >= MIN_MINUTES) & (actual <= MAX_MINUTES)], trained_on), \
        "the actual minutes are the durations the model trains on"


@pytest.mark.slow
def test_predict_streams_batches(champion_home: Path, tlc_server: TlcServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "BATCH_ROWS", 10_000)
    settings = load_settings(overrides={"home": str(champion_home), "data": {
        "year": 2021, "month": 3, "url_template": tlc_server.url_template}})
    result = batch.score_month(settings)
    stored = pq.ParquetFile(result.path)
    assert stored.metadata.num_rows == result.rows
    assert stored.metadata.num_row_groups == -(-result.rows // 10_000)
    assert result.rmse is not None and 3 < result.rmse < 10


def test_predict_without_champion_says_what_to_do(tmp_path: Path, tlc_server: TlcServer) -> None:
    result = run_cli("predict", *cli_data_flags(tmp_path / "home", tlc_server, month=2))
    assert result.returncode == 1
    assert "run the pipeline first" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_killed_predicts_leftover_is_never_listed_and_the_next_predict_removes_it(
        champion_home: Path, tlc_server: TlcServer) -> None:
    import os
    import subprocess
    import sys

    from taxipipe.safety.atomic import atomic_path

    folder = champion_home / "predictions" / "green"
    with atomic_path(folder / "2021-04.parquet") as tmp:
        assert not tmp.name.endswith(".parquet") and tmp.name.startswith(f".2021-04.parquet.{os.getpid()}-")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = folder / f".2021-03.parquet.{dead.pid}-abc123.part"
    leftover.write_bytes(b"PAR1 no footer")
    settings = load_settings(overrides={"home": str(champion_home), "data": {
        "year": 2021, "month": 3, "url_template": tlc_server.url_template}})
    batch.score_month(settings)
    assert not leftover.exists()
    assert all(not path.name.startswith(".") for path in folder.glob("*.parquet"))


@pytest.mark.slow
def test_a_month_without_rides_gives_an_empty_file_with_every_column(champion_home: Path, tlc_server: TlcServer,
                                                                     tlc_dir: Path) -> None:
    folder = tlc_server.root / "empty"
    folder.mkdir(exist_ok=True)
    pq.write_table(pq.read_table(tlc_dir / "green_tripdata_2021-02.parquet").slice(0, 0),
                   folder / "green_tripdata_2021-02.parquet")
    settings = load_settings(overrides={"home": str(champion_home / ".." / "empty-month-home"), "data": {
        "year": 2021, "month": 2,
        "url_template": f"http://127.0.0.1:{tlc_server.port}/empty/{{color}}_tripdata_{{year}}-{{month:02d}}.parquet"},
        "mlflow": {"tracking_uri": store_uri(champion_home)}})
    result = batch.score_month(settings)
    table = pq.read_table(result.path)
    assert (result.rows, table.num_rows, result.rmse) == (0, 0, None)
    assert table.column_names == ["ride_index", "pickup_datetime", "PULocationID", "DOLocationID",
                                  "trip_distance", "predicted_minutes", "actual_minutes", "model_version"]


# one rule for a valid ride; a full disk names the home's file --------------------------------

def test_predict_sets_aside_the_rides_serving_refuses_and_fails_past_the_tolerated_share(
        champion_home: Path, tlc_server: TlcServer, tlc_dir: Path, tmp_path: Path) -> None:
    import pyarrow as pa

    from tests.faults import one_sentence_failure, served_folder, store_flags

    trips = pq.read_table(tlc_dir / "green_tripdata_2021-02.parquet").slice(0, 5000)
    pickup = trips["PULocationID"].to_pylist()
    pickup[1], pickup[2] = None, 10**9
    dropoff = trips["DOLocationID"].to_pylist()
    dropoff[3] = 300
    distance = trips["trip_distance"].to_pylist()
    distance[4] = 1e39
    for name, values in (("PULocationID", pickup), ("DOLocationID", dropoff), ("trip_distance", distance)):
        index = trips.schema.get_field_index(name)
        trips = trips.set_column(index, name, pa.array(values, trips.schema.field(index).type))
    template = served_folder(tlc_server, "refused-rides", {"green_tripdata_2021-02.parquet": trips})
    flags = store_flags(champion_home, tmp_path / "home", template, 2)

    refused = run_cli("predict", *flags)
    one_sentence_failure(refused, "green 2021-02: 4 of 5,000 rides break the ride rules", "PULocationID not null: 1",
                         "PULocationID in 1..265: 1", "DOLocationID in 1..265: 1",
                         "trip_distance at most 1,000,000 miles: 1", "validation.max_invalid_row_share")
    written = tmp_path / "home" / "predictions" / "green" / "2021-02.parquet"
    assert not written.exists()

    scored = run_cli("predict", *flags, env={"TAXIPIPE_VALIDATION__MAX_INVALID_ROW_SHARE": "0.001"})
    assert scored.returncode == 0, scored.stderr
    assert "4,996 rides of green 2021-02 scored" in scored.stdout
    assert "set aside 4 of 5,000 rides that break the ride rules (PULocationID not null: 1" in scored.stdout
    kept = pq.read_table(written)
    assert kept["ride_index"].to_pylist() == [0, *range(5, 5000)]
    assert np.isfinite(kept["predicted_minutes"].to_numpy()).all()


def test_predict_on_a_full_home_names_the_homes_file_not_the_mirrors(
        champion_home: Path, tlc_dir: Path, tmp_path: Path) -> None:
    from tests.faults import ROOT, one_sentence_failure, read_only, small_disk, store_flags

    home = tmp_path / "home"
    template = str(tlc_dir / "{color}_tripdata_{year}-{month:02d}.parquet")
    with small_disk(home, 64) if ROOT else read_only(home / "downloads"):
        failed = run_cli("predict", *store_flags(champion_home, home, template, 3))
    line = one_sentence_failure(failed, str(home / "downloads"))
    assert str(tlc_dir) not in line, line
    if ROOT:
        assert f"no room to write {home / 'downloads' / 'green_tripdata_2021-03.parquet'} (" in line, line
