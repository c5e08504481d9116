"""Compare what each runner recorded in MLflow: one row per run, and a consistency check.

`runs` reads the runs into rows (what each cost, the steps it reused, where the champion is)
and checks that runs on the same data and config agree on RMSE; `timing` says when the times
of single runs do not compare; `render` draws the table, the JSON and the chart; `command` is
what `taxipipe compare` prints and the status it exits with.
"""

from taxipipe.compare.command import report
from taxipipe.compare.render import as_json, compact_window, display_width, figure, fit, plot, table, terminal_width
from taxipipe.compare.runs import Disagreement, RunRow, champion_elsewhere, collect, disagreements
from taxipipe.compare.timing import timing_warnings

__all__ = [
    "Disagreement", "RunRow", "as_json", "champion_elsewhere", "collect", "compact_window", "disagreements",
    "display_width", "figure", "fit", "plot", "report", "table", "terminal_width", "timing_warnings",
]
