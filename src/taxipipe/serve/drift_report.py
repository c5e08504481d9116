"""The drift report of `taxipipe monitor` as one self-contained HTML page (charts inline, full width)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from taxipipe.serve.drift import TRIM, ZONES
from taxipipe.serve.zones import ZoneNames
from taxipipe.window import window_label

if TYPE_CHECKING:
    import numpy as np

    from taxipipe.serve.drift import MonitorReport

#: What each column is, in words, and the unit of its values.
TITLES = {"PULocationID": ("pickup zone", "LocationID"), "DOLocationID": ("dropoff zone", "LocationID"),
          "trip_distance": ("trip distance", "miles"), "predicted_minutes": ("predicted duration", "minutes")}
TOP_ZONES = 15
CLIP_QUANTILE = 0.99
#: Charts are drawn FIGURE_INCHES wide at DPI (1200 px) and shown at the page's full width
#: (60em, about 960 px), so their STYLE font sizes (points) read like the page's text.
FIGURE_INCHES = 12.0
DPI = 100
STYLE = {"font.size": 14, "axes.labelsize": 15, "xtick.labelsize": 14, "ytick.labelsize": 14,
         "legend.fontsize": 14}


def render_html(report: MonitorReport, experiment: str, zones: ZoneNames | None = None) -> str:
    """A self-contained HTML page: headline, statistics, RMSE verdict and a chart per column (inline PNG),
    zones named by `zones` (ids alone, with its note, when it has no names)."""
    p = report.partition
    zones = zones or ZoneNames()
    training, month = f"training data ({window_label(report.reference)})", f"this month ({p.label})"
    rows = "".join(
        f"<tr class='{'bad' if d.drifted else ''}'><td>{d.column}</td><td>{d.psi:.4f}</td><td>{d.threshold}</td>"
        f"<td>{_html_cell(d.ks)}</td><td>{_html_cell(d.wasserstein, TITLES[d.column][1])}</td>"
        f"<td>{_html_cell(d.jensen_shannon)}</td><td>{'drift' if d.drifted else 'ok'}</td></tr>"
        for d in report.drifts)
    if report.champion_rmse is None:
        rmse = f"{report.rmse:.4f} on this month; the champion's registered RMSE is unknown"
    else:
        rmse = (f"{report.rmse:.4f} on this month against {report.champion_rmse:.4f} registered: "
                f"{report.rmse_increase:+.4f} (limit +{report.max_rmse_increase})")
    rmse_row = (f"<tr class='{'bad' if report.rmse_verdict == 'over the limit' else ''}'><td>RMSE (minutes)</td>"
                f"<td colspan='5'>{rmse}</td><td>{report.rmse_verdict}</td></tr>")
    charts = []
    with _pyplot().rc_context(STYLE):
        for column, (reference, current) in report.distributions.items():
            title, unit = TITLES[column]
            alt = f"{column}: {training} and {month}"
            if column in ZONES:
                image, caption, labels = _zone_chart(title, reference, current, training, month, zones)
                alt += f"; zones {', '.join(labels)}"
            else:
                image, top = _histogram(f"{title} ({unit})", reference, current, training, month)
                caption = (f"Shares of rides per bin. The axis ends at the training data's {CLIP_QUANTILE:.0%} "
                           f"quantile, {top:.1f} {unit}: the last bin also holds every longer ride (clipped into "
                           f"it), so a heavier tail shows as a taller last bar.")
            heading = f"Top {TOP_ZONES} {title}s by share of rides" if column in ZONES else title.capitalize()
            charts.append(f"<figure><h2>{heading} ({column})</h2>"
                          f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{image}'>"
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    notes = [report.trained_on_note] if report.trained_on else []
    notes += [zones.note] if zones.note else []
    note = "".join(f"<p class='note'>Note: {html.escape(text)}</p>" for text in notes)
    reasons = f"<p>{html.escape('; '.join(report.reasons))}</p>" if report.drifted else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>taxipipe monitor {p.color} {p.label}: {report.headline}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td,th{{padding:.3em .8em;border-bottom:1px solid #ddd}}
.bad{{background:#fdd}}.ok{{background:#dfd}}.headline{{font-size:1.4em;font-weight:bold}}
.note{{background:#fff4cc;padding:.6em}}
figure{{margin:1.5em 0}}figure img{{display:block;width:100%;height:auto}}
figcaption{{color:#444;max-width:50em}}</style></head><body>
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
the zones' shares of rides for zones; 0.2 is the usual limit of a major shift. KS and
Jensen-Shannon (0 to 1) describe the shift. Wasserstein says how far, on average, a ride's value
moved from the training data to this month, in the column's unit (miles for trip_distance,
minutes for predicted_minutes): the mean gap between the two samples' matching percentiles from
{TRIM:.0%} to {1 - TRIM:.0%}. The {TRIM:.0%} at each end is left out because the TLC files hold
absurd rides (trips of over 100,000 miles), one of which would outweigh every other ride; a
shift confined to those ends shows in PSI (its first and last deciles) and in the charts' last
bin, not here. MLflow run {report.run_id} in experiment '{experiment}'.</p>
</body></html>
"""


def _html_cell(value: float | None, unit: str = "") -> str:
    return f"{value:.4f} {unit}".strip() if value is not None else "-"


def _png(figure: Any) -> str:
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _zone_chart(title: str, reference: np.ndarray, current: np.ndarray, training: str,
                month: str, zones: ZoneNames) -> tuple[str, str, list[str]]:
    """The TOP_ZONES zones with the largest share of rides in either month, both shares side by side;
    the chart, its caption and the zones' labels (largest first)."""
    import numpy as np

    size = int(max(reference.max(), current.max())) + 1
    ref = np.bincount(reference.astype(np.int64), minlength=size) / len(reference) * 100
    cur = np.bincount(current.astype(np.int64), minlength=size) / len(current) * 100
    largest = np.maximum(ref, cur)
    top = np.argsort(-largest, kind="stable")[:TOP_ZONES]
    top = top[largest[top] > 0]
    positions = np.arange(len(top))
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(FIGURE_INCHES, 0.45 * len(top) + 1.5), layout="constrained")
    axes.barh(positions - 0.2, ref[top], height=0.4, label=training)
    axes.barh(positions + 0.2, cur[top], height=0.4, label=month)
    labels = [zones.label(int(zone)) for zone in top]
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    axes.set_xlabel("share of rides (%)")
    axes.set_ylabel(f"{title} (LocationID{' and name' if zones.names else ''})")
    axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    caption = (f"The {len(top)} zones with the largest share of rides in either month; together they hold "
               f"{ref[top].sum():.0f}% of the training rides and {cur[top].sum():.0f}% of this month's.")
    return _png(figure), caption, labels


def _histogram(label: str, reference: np.ndarray, current: np.ndarray, training: str,
               month: str) -> tuple[str, float]:
    """Both distributions as shares of rides per bin, clipped at the reference's CLIP_QUANTILE; and that edge."""
    import numpy as np

    top = float(np.quantile(reference, CLIP_QUANTILE)) or 1.0
    bins = np.linspace(0, top, 40)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(FIGURE_INCHES, 4.5), layout="constrained")
    for values, name in ((reference, training), (current, month)):
        axes.hist(np.clip(values, 0, top), bins=bins, weights=np.full(len(values), 100 / len(values)),
                  alpha=0.5, label=name)
    axes.set_xlabel(label)
    axes.set_ylabel("share of rides (%)")
    axes.legend()
    return _png(figure), top
