"""`taxipipe monitor` and the monthly monitor-then-retrain job (the Airflow DAG; the Prefect flow
runs in test_prefect_runner.py, on its module's server)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from taxipipe.config import load_settings
from taxipipe.serve.champion import Loaded
from taxipipe.partition import Partition
from taxipipe.serve.metrics import ServeMetrics
from taxipipe.serve.drift import Drift, numeric_drift, psi, zone_drift
from taxipipe.serve.drift_report import DPI, FIGURE_INCHES, STYLE, render_html
from taxipipe.serve.monitor import MonitorReport, clean_rides, training_data, window_rides, write_verdict
from taxipipe.serve.zones import TLC_ZONE_URL, ZONE_FILE, ZoneNames, table_url, zone_names
from tests.helpers import REPO, TlcServer, cli_data_flags, run_cli, store_uri


def test_psi_is_zero_for_equal_distributions_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.exponential(3.0, 50_000)
    assert psi(np.full(4, 0.25), np.full(4, 0.25)) == 0
    assert numeric_drift("d", reference, rng.exponential(3.0, 50_000), 0.2).psi < 0.01
    shifted = numeric_drift("d", reference, rng.exponential(6.0, 50_000), 0.2)
    assert shifted.drifted and shifted.ks > 0.2 and shifted.wasserstein > 2
    zones = rng.integers(1, 266, 50_000)
    assert not zone_drift("z", zones, rng.integers(1, 266, 50_000), 0.2).drifted
    assert zone_drift("z", zones, rng.integers(1, 40, 50_000), 0.2).drifted


def test_one_absurd_ride_does_not_dominate_the_wasserstein_distance() -> None:
    rng = np.random.default_rng(1)
    reference = rng.exponential(3.0, 60_000)
    one_absurd_ride = np.append(rng.exponential(3.0, 60_000), 244_152.01)  # green 2021-01 has this one
    assert numeric_drift("trip_distance", reference, one_absurd_ride, 0.2).wasserstein < 0.1
    assert numeric_drift("trip_distance", reference, rng.exponential(3.3, 60_000), 0.2).wasserstein > 0.2


def test_zone_names_come_from_the_table_beside_the_months_once(tmp_path: Path, tlc_server: TlcServer) -> None:
    month = Partition("green", 2021, 2)
    assert table_url(load_settings().data.url_template, month) == TLC_ZONE_URL
    settings = load_settings(overrides={"home": str(tmp_path), "data": {"url_template": tlc_server.url_template}})
    zones = zone_names(settings, month)
    assert zones.note is None and len(zones.names) == 265
    assert [zones.label(zone) for zone in (74, 264, 265, 266)] == [
        "74 East Harlem North", "264 Unknown", "265 Outside of NYC", "266"]
    asked = tlc_server.hits(ZONE_FILE)
    assert zone_names(settings, month) == zones and tlc_server.hits(ZONE_FILE) == asked  # cached in the home


def test_without_the_zone_table_zones_keep_their_ids_with_a_note(tmp_path: Path, tlc_server: TlcServer) -> None:
    folder = tlc_server.root / "no-zone-table"
    folder.mkdir(exist_ok=True)
    template = tlc_server.url_template.replace("/{color}", "/no-zone-table/{color}")
    settings = load_settings(overrides={"home": str(tmp_path), "data": {"url_template": template}})
    zones = zone_names(settings, Partition("green", 2021, 2))
    assert zones.names == {} and zones.label(74) == "74"
    assert zones.note == (f"zones are shown by LocationID: the zone table http://127.0.0.1:{tlc_server.port}/"
                          f"no-zone-table/{ZONE_FILE} could not be had (it is not there)")
    (folder / ZONE_FILE).write_text("<html><body>Not found</body></html>\n")
    assert zone_names(settings, Partition("green", 2021, 2)).note.endswith("(it is not a zone table)")


def test_the_report_names_zones_explains_wasserstein_and_draws_page_wide_charts() -> None:
    import base64
    import struct

    rng = np.random.default_rng(2)
    report = _report(0.01)
    report.drifts[1] = Drift("trip_distance", 0.01, 0.2, ks=0.02, wasserstein=0.1646)
    pickups = (np.repeat([74, 75, 41], [3_000, 1_500, 500]), np.repeat([74, 75, 7], [2_500, 1_500, 1_000]))
    report.distributions = {"PULocationID": pickups,
                            "trip_distance": (rng.exponential(3.0, 5_000), rng.exponential(3.0, 5_000))}
    page = render_html(report, "monitoring", ZoneNames({74: "East Harlem North", 75: "East Harlem South"}))
    assert "zones 74 East Harlem North, 75 East Harlem South, 7, 41'" in page.replace("&#x27;", "'")
    words = " ".join(page.split())
    assert "<td>0.1646 miles</td>" in page and "in the column's unit (miles for trip_distance" in words
    assert "matching percentiles from 1% to 99%" in words and "trips of over 100,000 miles" in words
    widths = [struct.unpack(">I", base64.b64decode(image)[16:20])[0]
              for image in re.findall(r"base64,([^']+)'", page)]
    assert widths == [FIGURE_INCHES * DPI] * 2 and "figure img{display:block;width:100%" in page
    ids_only = ZoneNames(note="zones are shown by LocationID: the zone table could not be had (it is not there)")
    report.distributions.pop("trip_distance")
    page = render_html(report, "monitoring", ids_only)
    assert "zones 74, 75, 7, 41'" in page.replace("&#x27;", "'") and f"Note: {ids_only.note}" in page


def _report(psi_pickup: float) -> MonitorReport:
    return MonitorReport(partition=Partition("green", 2023, 2), reference=(Partition("green", 2021, 1),),
                         model_name="m", model_version=4, champion_run_id="r", rows=60_000, reference_rows=70_000,
                         drifts=[Drift("PULocationID", psi_pickup, 0.2), Drift("trip_distance", 0.01, 0.2)],
                         rmse=6.5, champion_rmse=6.0, max_rmse_increase=1.0)


def test_the_last_verdict_is_served_on_metrics_and_a_broken_file_is_skipped(tmp_path: Path) -> None:
    verdict = tmp_path / "metrics" / "taxipipe_monitor.prom"
    metrics = ServeMetrics(textfiles=(verdict,))
    assert b"taxipipe_monitor" not in metrics.exposition()
    write_verdict(verdict, _report(1.08))
    page = metrics.exposition().decode()
    labels = 'color="green",model_version="4",month="2023-02"'
    assert f"taxipipe_monitor_drifted{{{labels}}} 1.0" in page
    assert f"taxipipe_monitor_columns_drifted{{{labels}}} 1.0" in page
    assert 'taxipipe_monitor_psi{color="green",column="PULocationID",model_version="4",month="2023-02"} 1.08' in page
    assert f"taxipipe_monitor_rmse_increase_minutes{{{labels}}} 0.5" in page
    write_verdict(verdict, _report(0.01))
    assert f"taxipipe_monitor_drifted{{{labels}}} 0.0" in metrics.exposition().decode()
    verdict.write_text("taxipipe_monitor_drifted{ 1\n")
    page = metrics.exposition().decode()
    assert "taxipipe_monitor" not in page and "taxipipe_serve_model_version 0.0" in page


def test_the_reference_is_the_champions_whole_training_window(tmp_path: Path, tlc_server: TlcServer) -> None:
    from taxipipe import tracking

    settings = load_settings(overrides={"home": str(tmp_path), "data": {"url_template": tlc_server.url_template}})
    client = tracking.client(settings)
    run_id = client.create_run(client.create_experiment("trained-on-a-window")).info.run_id
    for key, value in {"color": "green", "year": 2021, "month": 3, "train_months": 2}.items():
        client.log_param(run_id, key, value)
    client.log_metric(run_id, "rmse", 6.5)
    window, rmse = training_data(settings, Loaded("m", 1, run_id, "now", None))
    assert [month.label for month in window] == ["2021-02", "2021-03"] and rmse == 6.5
    rides = window_rides(settings, window)
    per_month = [len(clean_rides(settings, month)["duration"]) for month in window]
    assert len(rides["duration"]) == sum(per_month) and min(per_month) > 0


@pytest.mark.slow
def test_monitor_a_month_like_the_training_month(champion_home: Path, tlc_server: TlcServer) -> None:
    from taxipipe import tracking

    result = run_cli("monitor", *cli_data_flags(champion_home, tlc_server, month=2))
    assert result.returncode == 0, result.stderr
    assert "green 2021-02 (61,921 rides) against nyc-taxi-duration v1's training data 2021-01" in result.stdout
    assert "RMSE 6.0507" in result.stdout and "no threshold crossed" in result.stdout
    report = champion_home / "reports" / "monitor_green_2021-02.html"
    page = report.read_text()
    assert "0 of 4 columns drifted; RMSE within limits" in page and page.count("data:image/png;base64,") == 4
    assert "share of rides" in page and "clipped into it" in page and "trained on" not in page
    assert "zones 74 East Harlem North, 75 East Harlem South" in html.unescape(page)
    settings = load_settings(overrides={"home": str(champion_home)})
    client = tracking.client(settings)
    [run] = client.search_runs([client.get_experiment_by_name("monitoring").experiment_id],
                               filter_string="params.month = '2'")
    assert run.data.metrics["drifted"] == 0 and run.data.metrics["PULocationID.psi"] < 0.2
    assert run.data.params["model_version"] == "1"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == [report.name]


@pytest.mark.slow
def test_monitor_exits_3_when_a_threshold_is_crossed(champion_home: Path, tlc_server: TlcServer) -> None:
    result = run_cli("monitor", *cli_data_flags(champion_home, tlc_server, year=2023, month=2))
    assert result.returncode == 3, result.stderr
    assert "drift: PULocationID PSI" in result.stdout
    verdict = (champion_home / "metrics" / "taxipipe_monitor.prom").read_text()
    assert 'taxipipe_monitor_drifted{color="green",model_version="1",month="2023-02"} 1.0' in verdict
    rmse = run_cli("monitor", *cli_data_flags(champion_home, tlc_server, month=3),
                   env={"TAXIPIPE_MONITOR__MAX_RMSE_INCREASE": "0", "TAXIPIPE_MONITOR__MAX_FEATURE_PSI": "5",
                        "TAXIPIPE_MONITOR__MAX_PREDICTION_PSI": "5"})
    assert rmse.returncode == (3 if "above the champion's" in rmse.stdout else 0), rmse.stdout


@pytest.mark.slow
def test_the_report_of_a_training_month_says_so_and_its_charts_render_in_a_browser(
        champion_home: Path, tlc_server: TlcServer, tmp_path: Path) -> None:
    result = run_cli("monitor", *cli_data_flags(champion_home, tlc_server, month=1))
    assert result.returncode == 0, result.stderr
    assert "green 2021-01 is one of the months the champion was trained on" in result.stdout
    page = (champion_home / "reports" / "monitor_green_2021-01.html").read_text()
    assert "0 of 4 columns drifted; RMSE within limits" in page and "Note: green 2021-01 is one of the" in page
    images = render_images(page, tmp_path)
    assert [alt.split(":")[0] for alt, *_ in images] == ["PULocationID", "DOLocationID", "trip_distance",
                                                          "predicted_minutes"]
    assert "zones 74 East Harlem North, 75 East Harlem South" in images[0][0]
    assert all(complete and width == FIGURE_INCHES * DPI and height > 150 for _, complete, width, height, *_ in images)
    for _, _, width, _, shown, page_width in images:  # the page's width, tick labels of 12 px or more
        assert shown >= 0.99 * page_width and STYLE["ytick.labelsize"] * DPI / 72 * shown / width >= 12, images


def render_images(page: str, workdir: Path) -> list[list[Any]]:
    """Each image of `page` as Chromium (headless, 1280 px wide) loaded it: alt text, complete, natural width
    and height, the width it is shown at and the width of the page's text."""
    probe = """<script>addEventListener("load", () => document.body.setAttribute("data-images", JSON.stringify(
        [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight, i.clientWidth,
                                       document.body.clientWidth]))));</script>"""
    target = workdir / "report.html"
    target.write_text(page.replace("</body>", probe + "</body>"))
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs Debian's chromium package when run as root"
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1024",
                             "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--no-first-run",
                             f"--user-data-dir={workdir / 'chromium'}", "--dump-dom", target.as_uri()],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    found = re.search(r'data-images="([^"]*)"', result.stdout)
    assert found, result.stdout[:2000]
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.parametrize("month, make", [
    (8, lambda trips: trips.slice(0, 0)),
    (9, lambda trips: trips.set_column(trips.schema.get_field_index("lpep_dropoff_datetime"),
                                       "lpep_dropoff_datetime", trips["lpep_pickup_datetime"])),
], ids=["no-rows", "no-ride-of-1-to-60-minutes"])
@pytest.mark.slow
def test_monitor_a_month_without_rides_to_compare_says_so(
        champion_home: Path, tlc_server: TlcServer, tlc_dir: Path, month: int, make: Any) -> None:
    import pyarrow.parquet as pq

    pq.write_table(make(pq.read_table(tlc_dir / "green_tripdata_2021-02.parquet")),
                   tlc_server.root / f"green_tripdata_2021-{month:02d}.parquet")
    result = run_cli("monitor", *cli_data_flags(champion_home, tlc_server, month=month))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"green 2021-{month:02d} has no rides of 1..60 minutes to monitor" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_monitor_without_champion_says_what_to_do(tmp_path: Path, tlc_server: TlcServer) -> None:
    result = run_cli("monitor", *cli_data_flags(tmp_path / "home", tlc_server, month=2))
    assert result.returncode == 1 and "run the pipeline first" in result.stderr


def test_monitor_dag_parses_with_the_job_tasks(tmp_path: Path) -> None:
    describe = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["taxi_monitor_retrain"]
print(json.dumps({"errors": bag.import_errors, "schedule": str(dag.schedule),
                  "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "AIRFLOW"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    result = subprocess.run([sys.executable, "-c", describe, str(REPO / "dags" / "taxi_monitor_retrain.py")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    described = json.loads(result.stdout.strip().splitlines()[-1])
    assert described["errors"] == {} and described["schedule"] == "@monthly"
    assert described["tasks"] == {"monitor": ["drifted"], "drifted": ["retrain"], "retrain": []}


MONITOR_WITHOUT_CHAMPION = """
import json, sys
from datetime import datetime, timezone
from pathlib import Path
from taxipipe.runners.airflow.adapter import migrate_once, use_airflow_home
home, dags = Path(sys.argv[1]), Path(sys.argv[2])
use_airflow_home(home / "airflow", dags)
migrate_once(home / "airflow")
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=str(dags)).get_dag("taxi_monitor_retrain")
run = dag.test(logical_date=datetime(2021, 6, 1, tzinfo=timezone.utc), run_conf={"settings": {"home": str(home)}})
print(json.dumps({"state": str(run.state), "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}))
"""


@pytest.mark.slow
def test_the_monitor_dag_skips_with_its_reason_until_there_is_a_champion(tmp_path: Path) -> None:
    """A stack's first scheduled monitor run, before any pipeline run: green, not red."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAXIPIPE_", "AIRFLOW"))}
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"  # the task's log, where the reason is
    result = subprocess.run([sys.executable, "-c", MONITOR_WITHOUT_CHAMPION, str(tmp_path / "home"),
                             str(REPO / "dags")], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"state": "success", "tasks": dict.fromkeys(("monitor", "drifted", "retrain"), "skipped")}
    assert "no champion of nyc-taxi-duration yet: nothing to monitor until a pipeline run promotes one" \
        in result.stdout + result.stderr


# one rule for a valid ride; a monitor stopped by a full disk -----------------------------------

def _crafted_month(tlc_server: TlcServer, tlc_dir: Path, folder: str, month: int, null_pickups: int = 0) -> str:
    """A URL template serving green 2021-01 and, as 2021-`month`, the first 5,000 rides of 2021-02
    with `null_pickups` null PULocationIDs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.faults import served_folder

    trips = pq.read_table(tlc_dir / "green_tripdata_2021-02.parquet").slice(0, 5000)
    index = trips.schema.get_field_index("PULocationID")
    pickup = [None] * null_pickups + trips["PULocationID"].to_pylist()[null_pickups:]
    trips = trips.set_column(index, "PULocationID", pa.array(pickup, trips.schema.field(index).type))
    reference = "green_tripdata_2021-01.parquet"
    return served_folder(tlc_server, folder, {reference: tlc_dir / reference,
                                              f"green_tripdata_2021-{month:02d}.parquet": trips})


def test_monitor_sets_aside_a_null_zone_and_fails_past_the_tolerated_share(
        champion_home: Path, tlc_server: TlcServer, tlc_dir: Path, tmp_path: Path) -> None:
    from taxipipe.serve.batch import load_champion
    from taxipipe.serve.monitor import compare
    from tests.faults import one_sentence_failure, store_flags

    template = _crafted_month(tlc_server, tlc_dir, "null-zone", 6, 1)
    flags = store_flags(champion_home, tmp_path / "home", template, 6)
    one_sentence_failure(run_cli("monitor", *flags), "green 2021-06: 1 of 5,000 rides break the ride rules",
                         "PULocationID not null: 1", "validation.max_invalid_row_share")
    settings = load_settings(overrides={
        "home": str(tmp_path / "home"), "data": {"year": 2021, "month": 6, "url_template": template},
        "mlflow": {"tracking_uri": store_uri(champion_home)},
        "validation": {"max_invalid_row_share": 0.001}})
    report = compare(settings, load_champion(settings))
    assert (report.set_aside.rides, report.set_aside.rows) == (1, 5000)
    assert "set aside 1 of 5,000 rides that break the ride rules (PULocationID not null: 1)" in report.table()
    assert report.metrics()["set_aside_rows"] == 1


@pytest.mark.slow
def test_a_monitor_stopped_by_a_full_disk_ends_its_run_failed_and_a_later_one_closes_a_leftover(
        champion_home: Path, tlc_server: TlcServer, tlc_dir: Path, tmp_path: Path) -> None:
    from taxipipe import tracking
    from taxipipe.serve.monitor import RUNNER_TAG, start_run
    from tests.faults import ROOT, one_sentence_failure, read_only, small_disk, store_flags

    home = tmp_path / "home"
    flags = store_flags(champion_home, home, _crafted_month(tlc_server, tlc_dir, "full-reports", 7), 7)
    with small_disk(home / "reports", 16) if ROOT else read_only(home / "reports"):
        failed = run_cli("monitor", *flags)
    one_sentence_failure(failed, str(home / "reports" / "monitor_green_2021-07.html"))
    settings = load_settings(overrides={"home": str(home), "mlflow": {
        "tracking_uri": store_uri(champion_home)}})
    client = tracking.client(settings)
    experiment = client.get_experiment_by_name("monitoring").experiment_id
    month_runs = f"tags.partition = 'green/2021-07' and tags.runner = '{RUNNER_TAG}'"
    [stopped] = client.search_runs([experiment], month_runs)
    assert stopped.info.status == "FAILED"

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = client.create_run(experiment, tags={"partition": "green/2021-07", "runner": RUNNER_TAG,
                                                   "taxipipe.host": os.uname().nodename,
                                                   "taxipipe.pid": str(dead.pid)}).info.run_id
    report = MonitorReport(partition=Partition("green", 2021, 7), reference=(Partition("green", 2021, 1),),
                           model_name="m", model_version=1, champion_run_id="r", rows=1, reference_rows=1,
                           drifts=[], rmse=6.0, champion_rmse=6.0, max_rmse_increase=1.0)
    started = start_run(settings, report)
    assert client.get_run(leftover).info.status == "FAILED"
    assert client.get_run(started).info.status == "RUNNING"
    client.set_terminated(started)
