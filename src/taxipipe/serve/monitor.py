"""`taxipipe monitor`: has the month drifted away from what the champion was trained on?

For each feature (PULocationID, DOLocationID, trip_distance) and for the predictions, the
month is compared with the champion's training data, every month of its training window
(rides of 1..60 minutes in both):

- PSI (population stability index) decides: zones by their share of rides, distance and
  minutes by the training data's deciles. PSI does not grow with the row count, so one
  threshold (monitor.max_feature_psi, max_prediction_psi; 0.2 is the usual "major shift")
  fits a 60k-ride green month and a 3M-ride yellow one.
- KS statistic and Wasserstein distance (scipy) describe numeric shifts; Jensen-Shannon
  distance describes zone shifts. They are reported, not thresholded: on months of this
  size a KS p-value is ~0 for any visible difference.
- RMSE on the month's actual durations against the RMSE the champion was registered with
  (monitor.max_rmse_increase minutes).

Evidently, the course's monitoring library, does not import with pandas 3 (the locked
environment), so the statistics come from scipy and numpy.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxipipe.config import Settings
from taxipipe.errors import DataQualityError
from taxipipe.partition import Partition
from taxipipe.window import training_window, window_key, window_label

if TYPE_CHECKING:
    import numpy as np

    from taxipipe.serve.champion import Loaded

ZONES = ("PULocationID", "DOLocationID")
NUMERIC = ("trip_distance", "predicted_minutes")
#: What each column is, in words, and the unit of its values.
TITLES = {"PULocationID": ("pickup zone", "LocationID"), "DOLocationID": ("dropoff zone", "LocationID"),
          "trip_distance": ("trip distance", "miles"), "predicted_minutes": ("predicted duration", "minutes")}
TOP_ZONES = 15
CLIP_QUANTILE = 0.99
SHARE_FLOOR = 1e-4
DECILES = 10
EXPERIMENT = "monitoring"
VERDICT_FILE = "taxipipe_monitor.prom"


@dataclass(frozen=True)
class Drift:
    """One column's shift between the training data and the monitored month."""

    column: str
    psi: float
    threshold: float
    ks: float | None = None
    wasserstein: float | None = None
    jensen_shannon: float | None = None

    @property
    def drifted(self) -> bool:
        return self.psi > self.threshold


@dataclass
class MonitorReport:
    """The comparison of a month with the champion's training window, and where it was recorded."""

    partition: Partition
    reference: tuple[Partition, ...]
    model_name: str
    model_version: int
    champion_run_id: str
    rows: int
    reference_rows: int
    drifts: list[Drift]
    rmse: float
    champion_rmse: float | None
    max_rmse_increase: float
    report_path: Path | None = None
    run_id: str | None = None
    seconds: float = 0.0
    distributions: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def rmse_increase(self) -> float | None:
        return None if self.champion_rmse is None else self.rmse - self.champion_rmse

    @property
    def rmse_verdict(self) -> str:
        """`within limits`, `over the limit` or `not compared` (the champion's RMSE is unknown)."""
        if self.rmse_increase is None:
            return "not compared"
        return "over the limit" if self.rmse_increase > self.max_rmse_increase else "within limits"

    @property
    def headline(self) -> str:
        """`3 of 4 columns drifted; RMSE within limits`."""
        drifted = sum(d.drifted for d in self.drifts)
        return f"{drifted} of {len(self.drifts)} columns drifted; RMSE {self.rmse_verdict}"

    @property
    def trained_on(self) -> bool:
        """Whether the monitored month is one the champion was trained on."""
        return self.partition in self.reference

    @property
    def trained_on_note(self) -> str:
        return (f"{self.partition.color} {self.partition.label} is one of the months the champion was trained on "
                f"({window_label(self.reference)}): the month is compared with data that contains it, so small "
                f"values say nothing about drift; monitor a month after the training window.")

    @property
    def reasons(self) -> list[str]:
        """Every threshold crossed, in words."""
        found = [f"{d.column} PSI {d.psi:.3f} > {d.threshold}" for d in self.drifts if d.drifted]
        if self.rmse_increase is not None and self.rmse_increase > self.max_rmse_increase:
            found.append(f"RMSE {self.rmse:.3f} is {self.rmse_increase:.3f} above the champion's "
                         f"{self.champion_rmse:.3f} (allowed {self.max_rmse_increase})")
        return found

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {"rmse": self.rmse, "rows": self.rows, "reference_rows": self.reference_rows,
                                    "drifted": float(self.drifted)}
        if self.champion_rmse is not None:
            values.update(champion_rmse=self.champion_rmse, rmse_increase=self.rmse_increase)
        for drift in self.drifts:
            for stat in ("psi", "ks", "wasserstein", "jensen_shannon"):
                value = getattr(drift, stat)
                if value is not None:
                    values[f"{drift.column}.{stat}"] = value
        return values

    def record(self) -> dict[str, Any]:
        """A small JSON-serialisable record (for schedulers' XCom and task results)."""
        return {"partition": self.partition.key, "reference": window_key(self.reference),
                "model_version": self.model_version, "drifted": self.drifted, "reasons": self.reasons,
                "rmse": self.rmse, "champion_rmse": self.champion_rmse, "run_id": self.run_id,
                "report": str(self.report_path) if self.report_path else None,
                "psi": {d.column: d.psi for d in self.drifts}}

    def table(self) -> str:
        lines = [f"🔎 {self.partition.color} {self.partition.label} ({self.rows:,} rides) against "
                 f"{self.model_name} v{self.model_version}'s training data {window_label(self.reference)} "
                 f"({self.reference_rows:,} rides)", "",
                 f"{'column':<18} {'PSI':>7} {'limit':>6} {'KS':>7} {'Wasserst.':>9} {'JS':>7}  drift"]
        for d in self.drifts:
            cells = [_cell(d.ks), _cell(d.wasserstein, 9), _cell(d.jensen_shannon)]
            lines.append(f"{d.column:<18} {d.psi:>7.4f} {d.threshold:>6} {cells[0]} {cells[1]} {cells[2]}  "
                         f"{'YES' if d.drifted else 'no'}")
        champion = f"{self.champion_rmse:.4f}" if self.champion_rmse is not None else "unknown"
        lines += ["", f"RMSE {self.rmse:.4f} on the month's rides of 1..60 minutes; champion registered with "
                      f"{champion} (allowed increase {self.max_rmse_increase})"]
        verdict = "⚠️  drift: " + "; ".join(self.reasons) if self.drifted else "✅ no threshold crossed"
        lines.append(verdict)
        if self.trained_on:
            lines.append(f"   note: {self.trained_on_note}")
        if self.report_path:
            lines.append(f"   report {self.report_path} (MLflow run {self.run_id} in '{EXPERIMENT}')")
        return "\n".join(lines)


def _cell(value: float | None, width: int = 7) -> str:
    return f"{value:>{width}.4f}" if value is not None else " " * (width - 1) + "-"


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of two vectors of shares (each summing to 1)."""
    import numpy as np

    ref = np.clip(reference, SHARE_FLOOR, None)
    cur = np.clip(current, SHARE_FLOOR, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def zone_drift(column: str, reference: np.ndarray, current: np.ndarray, threshold: float) -> Drift:
    """Shift of a zone column: PSI and Jensen-Shannon distance of the zones' shares of rides."""
    import numpy as np
    from scipy.spatial.distance import jensenshannon

    size = int(max(reference.max(initial=0), current.max(initial=0))) + 1
    ref = np.bincount(reference.astype(np.int64), minlength=size) / max(len(reference), 1)
    cur = np.bincount(current.astype(np.int64), minlength=size) / max(len(current), 1)
    return Drift(column, psi(ref, cur), threshold, jensen_shannon=float(jensenshannon(ref, cur, base=2)))


def numeric_drift(column: str, reference: np.ndarray, current: np.ndarray, threshold: float) -> Drift:
    """Shift of a numeric column: PSI over the reference's deciles, KS statistic, Wasserstein distance."""
    import numpy as np
    from scipy import stats

    edges = np.unique(np.quantile(reference, np.linspace(0, 1, DECILES + 1)[1:-1]))

    def shares(values: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1) / len(values)

    return Drift(column, psi(shares(reference), shares(current)), threshold,
                 ks=float(stats.ks_2samp(reference, current).statistic),
                 wasserstein=float(stats.wasserstein_distance(reference, current)))


def clean_rides(settings: Settings, partition: Partition) -> dict[str, np.ndarray]:
    """The month's rides of 1..60 minutes as arrays (fetched into the download cache if needed)."""
    from taxipipe.data import read_trips
    from taxipipe.features import MODEL_COLUMNS, TARGET, add_duration
    from taxipipe.serve.batch import month_file

    table = add_duration(read_trips(month_file(settings, partition), partition.color))
    return {name: table[name].to_numpy() for name in (*MODEL_COLUMNS, TARGET)}


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
    current = clean_rides(settings, partition)
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
        max_rmse_increase=limits.max_rmse_increase)
    report.distributions = {column: (reference[column], current[column]) for column in (*ZONES, *NUMERIC)}
    return report


def monitor_month(settings: Settings) -> MonitorReport:
    """Compare the configured month with the champion's training data; write the HTML report
    under {home}/reports/ and log the metrics to the MLflow experiment `monitoring`."""
    from taxipipe.safety.atomic import write_text_atomic
    from taxipipe.serve.batch import load_champion

    started = time.perf_counter()
    report = compare(settings, load_champion(settings))
    partition = report.partition
    report.report_path = settings.home / "reports" / f"monitor_{partition.color}_{partition.label}.html"
    report.run_id = log_to_mlflow(settings, report)
    report.seconds = time.perf_counter() - started
    write_text_atomic(report.report_path, render_html(report))
    _log_artifact(settings, report)
    write_verdict(verdict_path(settings), report)
    return report


def verdict_path(settings: Settings) -> Path:
    """The Prometheus text file holding the last verdict: `taxipipe serve` adds it to /metrics,
    and a node-exporter textfile collector can read its folder."""
    return settings.home / "metrics" / VERDICT_FILE


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


def log_to_mlflow(settings: Settings, report: MonitorReport) -> str:
    """One run in the `monitoring` experiment: the month, the champion, every statistic."""
    from mlflow.entities import Metric, Param, RunTag

    from taxipipe import tracking

    client = tracking.client(settings)
    experiment = tracking.named_experiment(settings, client, EXPERIMENT)
    partition = report.partition
    run = client.create_run(experiment, run_name=f"monitor-{partition.color}-{partition.label}",
                            tags={"partition": partition.key, "reference_partition": window_key(report.reference)})
    now = int(time.time() * 1000)
    params = {"color": partition.color, "year": partition.year, "month": partition.month,
              "model_name": report.model_name, "model_version": report.model_version,
              "champion_run_id": report.champion_run_id, "reference": window_key(report.reference)}
    client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in report.metrics().items()],
                     params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag("drift.reasons", "; ".join(report.reasons) or "none")])
    return run.info.run_id


def _log_artifact(settings: Settings, report: MonitorReport) -> None:
    from taxipipe import tracking

    client = tracking.client(settings)
    client.log_artifact(report.run_id, str(report.report_path))
    client.set_terminated(report.run_id)


def render_html(report: MonitorReport) -> str:
    """A self-contained HTML page: headline, statistics, RMSE verdict and a chart per column (inline PNG)."""
    p = report.partition
    training, month = f"training data ({window_label(report.reference)})", f"this month ({p.label})"
    rows = "".join(
        f"<tr class='{'bad' if d.drifted else ''}'><td>{d.column}</td><td>{d.psi:.4f}</td><td>{d.threshold}</td>"
        f"<td>{_html_cell(d.ks)}</td><td>{_html_cell(d.wasserstein)}</td><td>{_html_cell(d.jensen_shannon)}</td>"
        f"<td>{'drift' if d.drifted else 'ok'}</td></tr>" for d in report.drifts)
    if report.champion_rmse is None:
        rmse = f"{report.rmse:.4f} on this month; the champion's registered RMSE is unknown"
    else:
        rmse = (f"{report.rmse:.4f} on this month against {report.champion_rmse:.4f} registered: "
                f"{report.rmse_increase:+.4f} (limit +{report.max_rmse_increase})")
    rmse_row = (f"<tr class='{'bad' if report.rmse_verdict == 'over the limit' else ''}'><td>RMSE (minutes)</td>"
                f"<td colspan='5'>{rmse}</td><td>{report.rmse_verdict}</td></tr>")
    charts = []
    for column, (reference, current) in report.distributions.items():
        title, unit = TITLES[column]
        if column in ZONES:
            image, caption = _zone_chart(title, reference, current, training, month)
        else:
            image, top = _histogram(f"{title} ({unit})", reference, current, training, month)
            caption = (f"Shares of rides per bin. The axis ends at the training data's {CLIP_QUANTILE:.0%} "
                       f"quantile, {top:.1f} {unit}: the last bin also holds every longer ride (clipped into "
                       f"it), so a heavier tail shows as a taller last bar.")
        heading = f"Top {TOP_ZONES} {title}s by share of rides" if column in ZONES else title.capitalize()
        charts.append(f"<figure><h2>{heading} ({column})</h2>"
                      f"<img alt='{column}: {training} and {month}' src='data:image/png;base64,{image}'>"
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    note = f"<p class='note'>Note: {html.escape(report.trained_on_note)}</p>" if report.trained_on else ""
    reasons = f"<p>{html.escape('; '.join(report.reasons))}</p>" if report.drifted else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>taxipipe monitor {p.color} {p.label}: {report.headline}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td,th{{padding:.3em .8em;border-bottom:1px solid #ddd}}
.bad{{background:#fdd}}.ok{{background:#dfd}}.headline{{font-size:1.4em;font-weight:bold}}
.note{{background:#fff4cc;padding:.6em}}
figure{{margin:1.5em 0}}figcaption{{color:#444;max-width:50em}}</style></head><body>
<h1>Drift report: {p.color} {p.label} against {html.escape(report.model_name)} v{report.model_version}</h1>
<p class="headline {'bad' if report.drifted else 'ok'}">{report.headline}</p>
{reasons}{note}
<p>Training data {window_label(report.reference)}: {report.reference_rows:,} rides; this month: {report.rows:,} rides
(rides of 1..60 minutes in both).</p>
<table><tr><th>column</th><th>PSI</th><th>limit</th><th>KS</th><th>Wasserstein</th><th>Jensen-Shannon</th>
<th>verdict</th></tr>
{rows}
{rmse_row}</table>
{"".join(charts)}
<p>PSI (population stability index) decides: over the training data's deciles for numbers, over
the zones' shares of rides for zones; 0.2 is the usual limit of a major shift. KS, Wasserstein
(in the column's unit) and Jensen-Shannon describe the shift. MLflow run {report.run_id} in
experiment '{EXPERIMENT}'.</p>
</body></html>
"""


def _html_cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _png(figure: Any) -> str:
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _zone_chart(title: str, reference: np.ndarray, current: np.ndarray, training: str,
                month: str) -> tuple[str, str]:
    """The TOP_ZONES zones with the largest share of rides in either month, both shares side by side."""
    import numpy as np

    size = int(max(reference.max(), current.max())) + 1
    ref = np.bincount(reference.astype(np.int64), minlength=size) / len(reference) * 100
    cur = np.bincount(current.astype(np.int64), minlength=size) / len(current) * 100
    zones = np.argsort(-np.maximum(ref, cur), kind="stable")[:TOP_ZONES]
    positions = np.arange(len(zones))
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(zones) + 1.2))
    axes.barh(positions - 0.2, ref[zones], height=0.4, label=training)
    axes.barh(positions + 0.2, cur[zones], height=0.4, label=month)
    axes.set_yticks(positions, [str(zone) for zone in zones])
    axes.invert_yaxis()
    axes.set_xlabel("share of rides (%)")
    axes.set_ylabel(f"{title} (LocationID)")
    axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    caption = (f"The {len(zones)} zones with the largest share of rides in either month; together they hold "
               f"{ref[zones].sum():.0f}% of the training rides and {cur[zones].sum():.0f}% of this month's.")
    return _png(figure), caption


def _histogram(label: str, reference: np.ndarray, current: np.ndarray, training: str,
               month: str) -> tuple[str, float]:
    """Both distributions as shares of rides per bin, clipped at the reference's CLIP_QUANTILE; and that edge."""
    import numpy as np

    top = float(np.quantile(reference, CLIP_QUANTILE)) or 1.0
    bins = np.linspace(0, top, 40)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 3))
    for values, name in ((reference, training), (current, month)):
        axes.hist(np.clip(values, 0, top), bins=bins, weights=np.full(len(values), 100 / len(values)),
                  alpha=0.5, label=name)
    axes.set_xlabel(label)
    axes.set_ylabel("share of rides (%)")
    axes.legend()
    return _png(figure), top
