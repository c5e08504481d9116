"""`taxipipe monitor`: has the month drifted away from what the champion was trained on?

For each feature (PULocationID, DOLocationID, trip_distance) and for the predictions, the
month is compared with the champion's training data, every month of its training window
(rides of 1..60 minutes in both), by the statistics of `drift` (PSI against
monitor.max_feature_psi and max_prediction_psi), and its RMSE on the month's actual durations
with the RMSE the champion was registered with (monitor.max_rmse_increase minutes). Rides that
break the rules of a valid ride (`ride_rules`) are set aside and counted; the month fails when
a rule's share passes validation.max_invalid_row_share. The
verdict goes to the console, an HTML report (`drift_report`), the MLflow experiment
`monitoring` and a Prometheus text file that `taxipipe serve` adds to /metrics.

Evidently, the course's monitoring library, does not import with pandas 3 (the locked
environment), so the statistics come from scipy and numpy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from taxipipe.config import Settings
from taxipipe.errors import DataQualityError
from taxipipe.layout import Home
from taxipipe.partition import Partition
from taxipipe.ride_rules import SetAside
from taxipipe.serve.drift import EXPERIMENT, NUMERIC, ZONES, MonitorReport, numeric_drift, zone_drift
from taxipipe.serve.drift_report import render_html
from taxipipe.window import training_window, window_key

if TYPE_CHECKING:
    import numpy as np

    from taxipipe.serve.champion import Loaded

#: The `runner` tag of monitor runs: a later monitor of the month finds the runs a stopped one left.
RUNNER_TAG = "monitor"


def month_rides(settings: Settings, partition: Partition) -> tuple[dict[str, np.ndarray], SetAside]:
    """The month's valid rides of 1..60 minutes as arrays (fetched into the download cache if
    needed), and the rides set aside for breaking a ride rule."""
    from taxipipe.features import MODEL_COLUMNS, TARGET, add_duration
    from taxipipe.serve.batch import month_file
    from taxipipe.tlc import read_trips

    set_aside = SetAside()
    valid, _ = set_aside.split(read_trips(month_file(settings, partition), partition.color))
    table = add_duration(valid)
    return {name: table[name].to_numpy() for name in (*MODEL_COLUMNS, TARGET)}, set_aside


def clean_rides(settings: Settings, partition: Partition) -> dict[str, np.ndarray]:
    """The month's valid rides of 1..60 minutes as arrays."""
    return month_rides(settings, partition)[0]


def training_data(settings: Settings, champion: Loaded) -> tuple[tuple[Partition, ...], float | None]:
    """The champion's training window and its registered RMSE, from its MLflow run."""
    from taxipipe import tracking

    run = tracking.client(settings).get_run(champion.run_id)
    params = run.data.params
    last = Partition(params["color"], int(params["year"]), int(params["month"]))
    return training_window(last, int(params.get("train_months", 1))), run.data.metrics.get("rmse")


def window_rides(settings: Settings, window: tuple[Partition, ...]) -> dict[str, np.ndarray]:
    """The clean rides of every month of `window`, one array per column."""
    import numpy as np

    months = [clean_rides(settings, month) for month in window]
    return {name: np.concatenate([rides[name] for rides in months]) for name in months[0]}


def compare(settings: Settings, champion: Loaded) -> MonitorReport:
    """Drift of the configured month against the champion's training data, and its RMSE."""
    import numpy as np

    from taxipipe.models.base import rmse

    limits = settings.monitor
    partition = settings.partition
    current, set_aside = month_rides(settings, partition)
    set_aside.check(settings.validation.max_invalid_row_share, f"{partition.color} {partition.label}")
    if not len(current["duration"]):
        raise DataQualityError(f"{partition.color} {partition.label} has no rides of 1..60 minutes to monitor; "
                               f"pick a month with rides")
    window, champion_rmse = training_data(settings, champion)
    reference = window_rides(settings, window)
    if not len(reference["duration"]):
        raise DataQualityError(f"the champion's training data {window_key(window)} has no rides of 1..60 minutes "
                               f"to compare with")
    for rides in (reference, current):
        rides["predicted_minutes"] = champion.predict(rides["PULocationID"], rides["DOLocationID"],
                                                      rides["trip_distance"]).astype(np.float64)
    drifts = [zone_drift(column, reference[column], current[column], limits.max_feature_psi) for column in ZONES]
    drifts += [numeric_drift(column, reference[column], current[column],
                             limits.max_feature_psi if column == "trip_distance" else limits.max_prediction_psi)
               for column in NUMERIC]
    report = MonitorReport(
        partition=partition, reference=window, model_name=champion.name,
        model_version=champion.version, champion_run_id=champion.run_id, rows=len(current["duration"]),
        reference_rows=len(reference["duration"]),
        drifts=drifts, rmse=rmse(current["duration"], current["predicted_minutes"]), champion_rmse=champion_rmse,
        max_rmse_increase=limits.max_rmse_increase, set_aside=set_aside)
    report.distributions = {column: (reference[column], current[column]) for column in (*ZONES, *NUMERIC)}
    return report


def monitor_month(settings: Settings) -> MonitorReport:
    """Compare the configured month with the champion's training data; write the HTML report
    under {home}/reports/ and log the metrics to the MLflow experiment `monitoring`."""
    from taxipipe import tracking
    from taxipipe.safety.atomic import write_text_atomic
    from taxipipe.serve.batch import load_champion
    from taxipipe.serve.zones import zone_names

    started = time.perf_counter()
    report = compare(settings, load_champion(settings))
    partition = report.partition
    report.report_path = Home(settings.home).monitor_report(partition)
    client = tracking.client(settings)
    report.run_id = start_run(settings, report)
    with tracking.failed_on_error(client, report.run_id):
        log_to_mlflow(settings, report)
        report.seconds = time.perf_counter() - started
        write_text_atomic(report.report_path, render_html(report, EXPERIMENT, zone_names(settings, partition)))
        client.log_artifact(report.run_id, str(report.report_path))
        write_verdict(verdict_path(settings), report)
    client.set_terminated(report.run_id)
    return report


def verdict_path(settings: Settings) -> Path:
    """The Prometheus text file holding the last verdict: `taxipipe serve` adds it to /metrics,
    and a node-exporter textfile collector can read its folder."""
    return Home(settings.home).monitor_verdict


def write_verdict(path: Path, report: MonitorReport) -> None:
    """The report's verdict as gauges labelled with the month and the champion's version (atomic)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    partition = report.partition
    names = ("color", "month", "model_version")
    labels = (partition.color, partition.label, str(report.model_version))

    def gauge(name: str, help_text: str, value: float) -> None:
        Gauge(name, help_text, names, registry=registry).labels(*labels).set(value)

    gauge("taxipipe_monitor_drifted", "1 when the last monitored month crossed a monitor threshold",
          float(report.drifted))
    gauge("taxipipe_monitor_columns_drifted", "Columns whose PSI crossed its limit in the last monitored month",
          sum(d.drifted for d in report.drifts))
    psi_gauge = Gauge("taxipipe_monitor_psi", "PSI of each column of the last monitored month against the "
                      "training data", (*names, "column"), registry=registry)
    for drift in report.drifts:
        psi_gauge.labels(*labels, drift.column).set(drift.psi)
    gauge("taxipipe_monitor_rmse_minutes", "RMSE of the champion on the last monitored month", report.rmse)
    if report.rmse_increase is not None:
        gauge("taxipipe_monitor_rmse_increase_minutes",
              "RMSE of the last monitored month minus the champion's registered RMSE", report.rmse_increase)
    gauge("taxipipe_monitor_last_run_timestamp_seconds", "When `taxipipe monitor` last finished", time.time())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def start_run(settings: Settings, report: MonitorReport) -> str:
    """The month's run in the `monitoring` experiment, after ending FAILED the month's runs that
    a monitor stopped by a crash or a full disk left RUNNING."""
    from taxipipe import tracking

    client = tracking.client(settings)
    experiment = tracking.named_experiment(settings, client, EXPERIMENT)
    partition = report.partition
    tracking.fail_abandoned_runs(client, experiment, partition.key, RUNNER_TAG)
    run = client.create_run(experiment, run_name=f"monitor-{partition.color}-{partition.label}",
                            tags={"partition": partition.key, "reference_partition": window_key(report.reference),
                                  "runner": RUNNER_TAG, **tracking.owner_tags()})
    return run.info.run_id


def log_to_mlflow(settings: Settings, report: MonitorReport) -> None:
    """The month, the champion and every statistic, on the report's run."""
    from taxipipe import tracking

    partition = report.partition
    params = {"color": partition.color, "year": partition.year, "month": partition.month,
              "model_name": report.model_name, "model_version": report.model_version,
              "champion_run_id": report.champion_run_id, "reference": window_key(report.reference)}
    tracking.log_values(tracking.client(settings), report.run_id, params=params, metrics=report.metrics(),
                        tags={"drift.reasons": "; ".join(report.reasons) or "none"})
