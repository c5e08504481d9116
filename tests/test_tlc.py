"""Downloads over real HTTP, the cache, retries, and reading months whose types drift."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxipipe.errors import CorruptDataError, DataNotFoundError, NetworkError, SchemaError
from taxipipe.partition import Partition
from taxipipe.tlc import fetch, read_trips, source_url
from tests.helpers import TlcServer, cli_data_flags, free_port, run_cli
from tests.faults import one_sentence_failure, served_folder

JANUARY = "green_tripdata_2021-01.parquet"


def url(server: TlcServer, name: str) -> str:
    return f"http://127.0.0.1:{server.port}/{name}"


def test_partition_rolls_december_into_january() -> None:
    assert Partition("green", 2022, 12).next() == Partition("green", 2023, 1)
    template = "https://host/{color}_tripdata_{year}-{month:02d}.parquet"
    assert source_url(template, Partition("yellow", 2023, 2)) == "https://host/yellow_tripdata_2023-02.parquet"


def test_download_then_cache_hit(tlc_server: TlcServer, tlc_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / JANUARY
    before = tlc_server.hits(JANUARY)
    assert fetch(url(tlc_server, JANUARY), dest) is True
    assert dest.read_bytes() == (tlc_dir / JANUARY).read_bytes()
    assert fetch(url(tlc_server, JANUARY), dest) is False
    assert tlc_server.hits(JANUARY) == before + 1


def test_server_errors_are_retried(tlc_server: TlcServer, tmp_path: Path) -> None:
    tlc_server.fail_next(JANUARY, 503, 502)
    before = tlc_server.hits(JANUARY)
    assert fetch(url(tlc_server, JANUARY), tmp_path / JANUARY, retries=3, backoff_seconds=0.01)
    assert tlc_server.hits(JANUARY) == before + 3


def test_persistent_server_errors_give_up_cleanly(tlc_server: TlcServer, tmp_path: Path) -> None:
    tlc_server.fail_next(JANUARY, 503, 503)
    with pytest.raises(NetworkError, match="after 2 attempts.*HTTP 503.*url_template"):
        fetch(url(tlc_server, JANUARY), tmp_path / JANUARY, retries=1, backoff_seconds=0.01)
    assert list(tmp_path.iterdir()) == []


def test_missing_month_is_a_404_message(tlc_server: TlcServer, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="HTTP 404"):
        fetch(url(tlc_server, "green_tripdata_2030-01.parquet"), tmp_path / "x.parquet", retries=0)
    assert list(tmp_path.iterdir()) == []


def test_refused_connection_names_the_setting(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(NetworkError, match="unreachable.*url_template"):
        fetch(f"http://127.0.0.1:{port}/{JANUARY}", tmp_path / JANUARY, retries=1, backoff_seconds=0.01)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_rejected_and_not_kept(tlc_server: TlcServer, tlc_dir: Path, tmp_path: Path) -> None:
    name = "green_tripdata_1999-01.parquet"
    data = (tlc_dir / JANUARY).read_bytes()
    (tlc_server.root / name).write_bytes(data[: len(data) // 2])
    dest = tmp_path / "cache" / name
    with pytest.raises(CorruptDataError, match="truncated or corrupt"):
        fetch(url(tlc_server, name), dest, retries=0)
    assert list(dest.parent.iterdir()) == []


def test_truncated_cache_entry_is_fetched_again(tlc_server: TlcServer, tlc_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / JANUARY
    dest.write_bytes((tlc_dir / JANUARY).read_bytes()[:1000])
    assert fetch(url(tlc_server, JANUARY), dest) is True
    assert dest.stat().st_size == (tlc_dir / JANUARY).stat().st_size


def test_local_path_and_file_url_templates(tlc_dir: Path, tmp_path: Path) -> None:
    source = tlc_dir / JANUARY
    assert fetch(str(source), tmp_path / "a.parquet")
    assert fetch(source.resolve().as_uri(), tmp_path / "b.parquet")
    with pytest.raises(DataNotFoundError, match="no TLC file"):
        fetch(str(tmp_path / "absent.parquet"), tmp_path / "c.parquet")


def test_months_with_different_writers_read_alike(tlc_dir: Path) -> None:
    old = read_trips(tlc_dir / "green_tripdata_2021-01.parquet", "green")
    new = read_trips(tlc_dir / "green_tripdata_2023-02.parquet", "green")
    assert old.schema == new.schema
    assert str(old.schema.field("PULocationID").type) == "int32"


def test_yellow_layout_and_schema_errors(tlc_dir: Path, tmp_path: Path) -> None:
    table = pq.read_table(tlc_dir / JANUARY)
    yellow = table.rename_columns([c.replace("lpep_", "tpep_") for c in table.column_names])
    pq.write_table(yellow, tmp_path / "yellow.parquet")
    assert read_trips(tmp_path / "yellow.parquet", "yellow").num_rows == table.num_rows
    with pytest.raises(SchemaError, match="lacks required column.*lpep_pickup_datetime"):
        read_trips(tmp_path / "yellow.parquet", "green")
    words = table.set_column(table.schema.get_field_index("PULocationID"), "PULocationID",
                             pa.array(["zone"] * table.num_rows))
    pq.write_table(words, tmp_path / "words.parquet")
    with pytest.raises(SchemaError, match="PULocationID .* cannot be read as int32"):
        read_trips(tmp_path / "words.parquet", "green")
    shutil.copy(tlc_dir / JANUARY, tmp_path / "ok.parquet")
    assert read_trips(tmp_path / "ok.parquet", "green").num_rows == table.num_rows


# URL templates and the download cache --------------------------------------------------

@pytest.mark.parametrize("template", [
    "http://127.0.0.1:1/{color}_tripdata_{year}.parquet",
    "http://127.0.0.1:1/{color}_tripdata_{year}-{month:02d}{foo}.parquet",
    "http://127.0.0.1:1/{color}_tripdata_{year}-{month:02d.parquet",
    "http://127.0.0.1:1/{color}_tripdata_{year}-{month:q}.parquet",
])
def test_bad_url_template_is_one_sentence(home: Path, template: str) -> None:
    for command in (["run"], ["make", "extract"], ["make", "--dry-run"]):
        result = run_cli(*command, "--home", str(home), "--url-template", template)
        one_sentence_failure(result, "data.url_template")
    assert not (home / "downloads").exists()


def test_a_scheme_taxipipe_does_not_read_is_named(home: Path, tmp_path: Path) -> None:
    from taxipipe.config import load_settings
    from taxipipe.errors import ConfigError

    with pytest.raises(ConfigError, match="it uses s3://, which taxipipe does not read: give an http://"):
        load_settings(overrides={"data": {"url_template": "s3://bucket/{color}_tripdata_{year}-{month:02d}.parquet"}})
    with pytest.raises(ConfigError, match="ftp://, which taxipipe does not read"):
        fetch(f"ftp://127.0.0.1/{JANUARY}", tmp_path / JANUARY)
    assert list(tmp_path.iterdir()) == []
    result = run_cli("run", "--home", str(home), "--url-template",
                     "ftp://127.0.0.1/{color}_tripdata_{year}-{month:02d}.parquet")
    one_sentence_failure(result, "data.url_template", "it uses ftp://", "http://, https:// or file:// URL")
    assert not (home / "downloads").exists()


@pytest.mark.slow
def test_cached_download_is_reused_only_from_the_same_source(home: Path, tlc_server: TlcServer,
                                                             tlc_dir: Path) -> None:
    other = served_folder(tlc_server, "other-source", {
        "green_tripdata_2021-01.parquet": tlc_dir / "green_tripdata_2021-03.parquet",
        "green_tripdata_2021-02.parquet": tlc_dir / "green_tripdata_2021-04.parquet"})
    january = home / "downloads" / "green_tripdata_2021-01.parquet"
    flags = cli_data_flags(home, tlc_server)

    first = run_cli("make", "extract", *flags)
    assert first.returncode == 0, first.stderr
    assert january.read_bytes() == (tlc_dir / "green_tripdata_2021-01.parquet").read_bytes()
    moved = run_cli("make", "extract", *flags, "--url-template", other)
    assert moved.returncode == 0, moved.stderr
    assert "2021-01 downloaded" in moved.stdout, moved.stdout
    assert january.read_bytes() == (tlc_dir / "green_tripdata_2021-03.parquet").read_bytes()
    assert (home / "downloads" / "green_tripdata_2021-01.parquet.source").read_text().startswith(
        other.split("{")[0])
    back = run_cli("make", "extract", *flags)
    assert "2021-01 downloaded" in back.stdout, back.stdout
    assert january.read_bytes() == (tlc_dir / "green_tripdata_2021-01.parquet").read_bytes()
    again = run_cli("make", "extract", *flags, "--force")
    assert "2021-01 cached" in again.stdout, again.stdout
