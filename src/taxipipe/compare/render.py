"""The runs as a table that fits the terminal, as JSON, and as a chart (a PNG)."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from taxipipe.compare.runs import Disagreement, RunRow

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Column headers and values when the terminal is narrow.
SHORT_STEPS = {"extract": "extr", "validate_data": "vdata", "transform": "trans", "features": "feat",
               "validate_model": "vmod", "deploy": "depl", "cleanup": "clean"}
SHORT_KINDS = {"xgboost": "xgb", "linear": "lin", "random_forest": "rf"}
SHORT_FEATURES = {"categorical": "cat", "onehot": "1hot"}
SHORT_COMPUTE = {"memory": "mem", "external": "ext"}
#: The width of the tables when the output is no terminal and COLUMNS is unset.
DEFAULT_WIDTH = 100


@dataclass(frozen=True)
class Column:
    """A column of a table: its header and values, and shorter ones for narrow terminals."""

    header: str
    short: str
    value: Callable[[int, RunRow], str]  # (row number, row) -> text
    compact: Callable[[int, RunRow], str] | None = None
    numeric: bool = False
    optional: bool = False  # left out first when the table does not fit


def table(rows: list[RunRow], width: int = DEFAULT_WIDTH, notes: Iterable[str] = ()) -> str:
    """The runs, then each run's step times in pipeline order (blank: not run; `reused`: an
    earlier run's), `width` wide, then the `notes`, wrapped."""
    from taxipipe.pipeline import STEP_NAMES

    colors = {row.partition.split("/")[0] for row in rows}
    runs = [
        Column("#", "#", lambda n, row: str(n), numeric=True),
        Column("runner", "runner", lambda n, row: row.runner),
        Column("window", "window", lambda n, row: row.partition,
               lambda n, row: compact_window(row.partition, drop_color=len(colors) == 1)),
        Column("kind", "kind", lambda n, row: row.kind, lambda n, row: SHORT_KINDS.get(row.kind, row.kind)),
        Column("features", "feat", lambda n, row: row.feature_mode,
               lambda n, row: SHORT_FEATURES.get(row.feature_mode, row.feature_mode)),
        Column("compute", "comp", lambda n, row: row.compute,
               lambda n, row: SHORT_COMPUTE.get(row.compute, row.compute)),
        Column("RMSE", "RMSE", lambda n, row: f"{row.rmse:.4f}", numeric=True),
        Column("wall s", "wall", lambda n, row: _seconds(row.wall_seconds), numeric=True),
        Column("overhead s", "ovh", lambda n, row: _seconds(row.overhead_seconds), numeric=True),
        Column("champion", "champ", lambda n, row: "🏆 champion" if row.champion else "",
               lambda n, row: "🏆" if row.champion else ""),
        Column("run id", "run id", lambda n, row: row.run_id[:8], optional=True),
        Column("started (UTC)", "started", lambda n, row: row.start_time, optional=True),
    ]
    shown = {name for row in rows for name in [*row.step_seconds, *row.reused_steps]}
    steps = [name for name in STEP_NAMES if name in shown] + sorted(shown - set(STEP_NAMES))
    times = [runs[0], runs[1], *(Column(name, SHORT_STEPS.get(name, name), _step_time(name),
                                        _step_time(name, "r"), numeric=True) for name in steps),
             Column("steps s", "steps", lambda n, row: f"{row.steps_seconds:.1f}", numeric=True)]
    legend = "step seconds; wall s = steps s + overhead s (ovh)"
    if any(row.reused_steps for row in rows):
        legend += "; reused (r): up to date or cached, an earlier run's work, not counted"
    lines = [*fit(runs, rows, width), "", *textwrap.wrap(legend, width), *fit(times, rows, width)]
    wrapped = [textwrap.fill(note, width, subsequent_indent="    ") for note in notes]
    return "\n".join([*lines, *(["", *wrapped] if wrapped else [])])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _step_time(name: str, reused: str = "reused") -> Callable[[int, RunRow], str]:
    return lambda n, row: (f"{row.step_seconds[name]:.1f}" if name in row.step_seconds
                           else reused if name in row.reused_steps else "")


def compact_window(label: str, drop_color: bool) -> str:
    """`green/2023-01..2023-03` as `2023-01..03` (the color only when runs differ in it)."""
    color, _, months = label.rpartition("/")
    first, _, last = months.partition("..")
    if last[:4] == first[:4]:
        last = last[5:]
    short = f"{first}..{last}" if last else first
    return short if drop_color or not color else f"{color}/{short}"


def display_width(text: str) -> int:
    """Terminal cells `text` takes: wide characters (🏆) take two."""
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 0 if unicodedata.combining(char) else 1
               for char in text)


def terminal_width() -> int:
    """The width of the terminal the table prints to: its real width, or COLUMNS, or 100."""
    import shutil

    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def fit(columns: list[Column], rows: list[RunRow], width: int, key: int = 2) -> list[str]:
    """The table of `rows` in at most `width` terminal cells, a row always on one line if it can be.

    In turn, until it fits: leave out the optional columns, then shorten columns one at a time
    (short header, compact values), the one that saves most first. If it still does not fit,
    the columns after the first `key` (the run's number and runner) are split into blocks,
    each repeating those key columns.
    """
    def cells(chosen: list[Column], short: set[int]) -> list[list[str]]:
        table = [[column.short if i in short else column.header for i, column in enumerate(chosen)]]
        return table + [[(column.compact or column.value)(n, row) if i in short else column.value(n, row)
                         for i, column in enumerate(chosen)] for n, row in enumerate(rows, 1)]

    chosen, short = columns, set()
    text = cells(chosen, short)
    if _line_width(text, range(len(chosen))) > width:
        chosen = [column for column in columns if not column.optional]
        text = cells(chosen, short)
    while _line_width(text, range(len(chosen))) > width and len(short) < len(chosen):
        widths = _widths(text)
        shorter = {i: _widths(cells(chosen, short | {i}))[i] for i in range(len(chosen)) if i not in short}
        best = max(shorter, key=lambda i: widths[i] - shorter[i])
        if widths[best] == shorter[best]:
            break
        short.add(best)
        text = cells(chosen, short)
    if _line_width(text, range(len(chosen))) <= width:
        return _render(text, chosen, [list(range(len(chosen)))])
    blocks: list[list[int]] = [list(range(key))]
    for index in range(key, len(chosen)):
        if len(blocks[-1]) > key and _line_width(text, [*blocks[-1], index]) > width:
            blocks.append(list(range(key)))
        blocks[-1].append(index)
    return _render(text, chosen, blocks)


def _widths(cells: list[list[str]]) -> list[int]:
    return [max(display_width(row[i]) for row in cells) for i in range(len(cells[0]))]


def _line_width(cells: list[list[str]], indexes: Iterable[int]) -> int:
    widths = _widths(cells)
    chosen = [widths[i] for i in indexes]
    return sum(chosen) + 2 * (len(chosen) - 1)


def _render(cells: list[list[str]], columns: list[Column], blocks: list[list[int]]) -> list[str]:
    widths = _widths(cells)

    def cell(i: int, text: str) -> str:
        pad = " " * (widths[i] - display_width(text))
        return pad + text if columns[i].numeric else text + pad

    lines: list[str] = []
    for block in blocks:
        if lines:
            lines.append("")
        lines += ["  ".join(cell(i, row[i]) for i in block).rstrip() for row in cells]
    return lines


def as_json(rows: list[RunRow], problems: list[Disagreement], champion: str | None, cautions: list[str]) -> str:
    runs = [{k: v for k, v in asdict(row).items() if k != "config_key"} for row in rows]
    return json.dumps({"runs": runs, "disagreements": [asdict(p) for p in problems],
                       "champion_elsewhere": champion, "warnings": cautions}, indent=2)


def figure(rows: list[RunRow], notes: Iterable[str] = ()) -> Figure:
    """One horizontal bar per run, a label per line: RMSE on the left; on the right the wall
    time split into the steps and the engine's overhead. The champion's label is starred;
    equal RMSEs are said in words; the `notes` go under the chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taxipipe.pipeline import STEP_NAMES

    labels = [f"{'★ ' if row.champion else ''}{number} {row.runner} · {row.partition} · "
              f"{row.kind} {row.feature_mode} {row.compute}" for number, row in enumerate(rows, 1)]
    positions = list(range(len(rows)))
    chart, (left, right) = plt.subplots(1, 2, figsize=(14, 1.5 + 0.4 * len(rows)), sharey=True,
                                        gridspec_kw={"width_ratios": [1, 2]})
    left.barh(positions, [row.rmse for row in rows], color="tab:blue")
    for position, row in zip(positions, rows):
        left.annotate(f"{row.rmse:.4f}", (row.rmse, position), xytext=(-3, 0), textcoords="offset points",
                      ha="right", va="center", color="white", fontsize="small")
    scores = {f"{row.rmse:.4f}" for row in rows}
    if len(rows) > 1 and len(scores) == 1:
        left.set_xlabel(f"all {len(rows)} runs: RMSE {scores.pop()}", fontweight="bold")
    starred = any(row.champion for row in rows)
    left.set(title="Validation RMSE (minutes)" + ("; ★ champion" if starred else ""), yticks=positions)
    left.set_yticklabels(labels)
    left.invert_yaxis()
    for tick, row in zip(left.get_yticklabels(), rows):
        tick.set_fontweight("bold" if row.champion else "normal")
    left_edge = [0.0] * len(rows)
    colors = plt.get_cmap("tab10")
    for index, name in enumerate(STEP_NAMES):
        widths = [row.step_seconds.get(name, 0.0) for row in rows]
        if any(widths):
            right.barh(positions, widths, left=left_edge, label=name, color=colors(index % 10))
            left_edge = [edge + width for edge, width in zip(left_edge, widths)]
    overhead = [max(row.overhead_seconds or 0.0, 0.0) for row in rows]
    if any(overhead):
        right.barh(positions, overhead, left=left_edge, label="engine overhead", color="lightgrey",
                   hatch="//", edgecolor="grey")
    right.set(title="Wall time: steps + engine overhead", xlabel="seconds")
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    chart.tight_layout()
    text = "\n".join(textwrap.fill(f"• {note}", 160, subsequent_indent="  ") for note in notes)
    if text:
        chart.text(0.0, 0.0, text, ha="left", va="top", fontsize="small", transform=chart.transFigure)
    return chart


def plot(rows: list[RunRow], path: Path, notes: Iterable[str] = ()) -> None:
    """Write `figure` as a PNG."""
    import matplotlib.pyplot as plt

    chart = figure(rows, notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(chart)
