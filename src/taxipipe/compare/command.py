"""`taxipipe compare`: the text it prints (table or JSON), its exit status, and the plot."""

from __future__ import annotations

import textwrap
from pathlib import Path

from taxipipe.compare.render import as_json, plot, table, terminal_width
from taxipipe.compare.runs import champion_elsewhere, collect, disagreements
from taxipipe.compare.timing import timing_warnings
from taxipipe.config import Settings
from taxipipe.models.base import RMSE_AGREEMENT


def report(settings: Settings, latest_only: bool, as_machine: bool, plot_path: Path | None,
           check: bool, width: int | None = None) -> tuple[str, int, bool]:
    """The text (table or JSON), the exit status of `taxipipe compare`, and whether it wrote
    the plot (only when there are runs).

    Only `check` judges the runs: it adds the verdict and fails when runs disagree or none exist.
    The table fits `width` columns (default: the terminal's width).
    """
    rows = collect(settings, latest_only)
    problems = disagreements(rows)
    champion = champion_elsewhere(settings, rows) if rows else None
    cautions = timing_warnings(rows)
    if plot_path is not None and rows:
        plot(rows, plot_path, [*([champion] if champion else []), *cautions])
    if as_machine:
        text = as_json(rows, problems, champion, cautions)
    elif not rows:
        text = f"no runs yet in {settings.tracking_uri()} (experiments {settings.mlflow.experiment_name})"
    else:
        width = width or terminal_width()
        verdict = [textwrap.fill("⚠️  " + p.describe(), width, subsequent_indent="    ") for p in problems] or [
            f"✅ runs on the same data and config agree on RMSE (within {RMSE_AGREEMENT:g})"]
        notes = [*([champion] if champion else []), *(f"⚠️  {caution}" for caution in cautions)]
        text = "\n".join([table(rows, width, notes), *(["", *verdict] if check else [])])
    status = 1 if check and (problems or not rows) else 0
    return text, status, plot_path is not None and bool(rows)
