"""Compare what each runner recorded in MLflow: one row per run, and a consistency check.

Every runner trains the same model on the same data and config, so runs that share the data
partition and the parameters must agree on RMSE; a difference beyond `RMSE_AGREEMENT` is a bug.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from taxipipe import tracking
from taxipipe.config import Settings
from taxipipe.models.base import RMSE_AGREEMENT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STEP_METRIC = "step_seconds."
SHORT_NAMES = {"validate_data": "val_data", "validate_model": "val_model"}
#: The tables fit a terminal this wide.
WIDTH = 100


@dataclass
class RunRow:
    runner: str
    partition: str  # the training window: green/2021-01, or green/2023-01..2023-03
    kind: str
    feature_mode: str
    rmse: float
    total_seconds: float
    step_seconds: dict[str, float]
    run_id: str
    start_time: str
    champion: bool
    config_key: str = field(repr=False)


@dataclass
class Disagreement:
    partition: str
    kind: str
    feature_mode: str
    runs: dict[str, float]

    def describe(self) -> str:
        values = ", ".join(f"{run_id[:8]}={rmse:.6f}" for run_id, rmse in self.runs.items())
        return f"{self.partition} {self.kind} {self.feature_mode}: same data and config, RMSE differs ({values})"


def experiment_pattern(settings: Settings) -> re.Pattern[str]:
    """Names the configured experiment template gives, whatever the runner."""
    prefix, _, suffix = settings.mlflow.experiment_name.partition("{runner}")
    return re.compile(re.escape(prefix) + (".+" if _ else "") + re.escape(suffix) + "$")


def store_is_empty(settings: Settings) -> bool:
    """True when the embedded store has not been created yet (nothing to compare, nothing to open)."""
    return settings.mlflow.tracking_uri is None and not (settings.home / "mlflow" / "mlflow.db").exists()


def collect(settings: Settings, latest_only: bool = True) -> list[RunRow]:
    """The runs of every runner's experiment (`mlflow.experiment_name`) that finished training."""
    if store_is_empty(settings):
        return []
    client = tracking.client(settings)
    pattern = experiment_pattern(settings)
    experiments = [e for e in client.search_experiments() if pattern.match(e.name)]
    if not experiments:
        return []
    champion = tracking.champion_version(client, settings.mlflow.model_name)
    champion_run = champion.run_id if champion is not None else None
    rows: list[RunRow] = []
    seen: set[tuple[str, str, str, str]] = set()
    runs = client.search_runs([e.experiment_id for e in experiments], "metrics.rmse > 0",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        runner = tags.get("runner", "?")
        identity = (runner, tags.get("window", tags.get("partition", "?")), tags.get("model_kind", "xgboost"),
                    tags.get("feature_mode", "?"))
        if latest_only and identity in seen:
            continue
        seen.add(identity)
        steps = {k[len(STEP_METRIC):]: v for k, v in metrics.items() if k.startswith(STEP_METRIC)}
        rows.append(RunRow(
            runner=runner, partition=identity[1], kind=identity[2], feature_mode=identity[3],
            rmse=metrics["rmse"],
            total_seconds=round(sum(steps.values()), 3), step_seconds=steps, run_id=run.info.run_id,
            start_time=datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M"),
            champion=run.info.run_id == champion_run,
            config_key=json.dumps(sorted(run.data.params.items())),
        ))
    return sorted(rows, key=lambda row: (row.partition, row.kind, row.feature_mode, row.runner))


def disagreements(rows: list[RunRow]) -> list[Disagreement]:
    """Groups of runs with the same data and config whose RMSE spread exceeds RMSE_AGREEMENT."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.config_key, []).append(row)
    found = []
    for members in groups.values():
        scores = [row.rmse for row in members]
        if max(scores) - min(scores) > RMSE_AGREEMENT:
            found.append(Disagreement(members[0].partition, members[0].kind, members[0].feature_mode,
                                      {row.run_id: row.rmse for row in members}))
    return found


def table(rows: list[RunRow]) -> str:
    """Two narrow tables: the runs, then each run's step times in pipeline order (blank: not run)."""
    from taxipipe.pipeline import STEP_NAMES

    runs = [["#", "runner", "partition", "model", "features", "RMSE", "total s", "started (UTC)", "run id", ""]]
    runs += [[str(number), row.runner, row.partition, row.kind, row.feature_mode, f"{row.rmse:.4f}",
              f"{row.total_seconds:.2f}", row.start_time, row.run_id[:8], "🏆 champion" if row.champion else ""]
             for number, row in enumerate(rows, 1)]
    steps = [name for name in STEP_NAMES if any(name in row.step_seconds for row in rows)]
    steps += sorted({name for row in rows for name in row.step_seconds} - set(steps))
    times = [["#", "runner", *(SHORT_NAMES.get(name, name) for name in steps)]]
    times += [[str(number), row.runner, *(f"{row.step_seconds[name]:.2f}" if name in row.step_seconds else ""
                                          for name in steps)]
              for number, row in enumerate(rows, 1)]
    return "\n".join([*_columns(runs, numeric={0, 5, 6}), "", "step seconds", *_columns(times, keep=2)])


def _columns(cells: list[list[str]], numeric: set[int] | None = None, keep: int = 0) -> list[str]:
    """Aligned columns, two spaces apart; text left, numbers right (all numbers when `numeric` is None).

    Columns after the first `keep` are split into blocks that each fit WIDTH, every block
    repeating the first `keep` columns.
    """
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    right = set(range(keep, len(widths))) | {0} if numeric is None else numeric

    def cell(i: int, text: str) -> str:
        return text.rjust(widths[i]) if i in right else text.ljust(widths[i])

    blocks: list[list[int]] = [[]]
    used = sum(widths[:keep]) + 2 * keep
    for i in range(keep, len(widths)):
        if blocks[-1] and used + widths[i] > WIDTH:
            blocks.append([])
            used = sum(widths[:keep]) + 2 * keep
        blocks[-1].append(i)
        used += widths[i] + 2
    lines: list[str] = []
    for block in blocks:
        if lines:
            lines.append("")
        for row in cells:
            lines.append("  ".join(cell(i, row[i]) for i in [*range(keep), *block]).rstrip())
    return lines


def as_json(rows: list[RunRow], problems: list[Disagreement]) -> str:
    runs = [{k: v for k, v in asdict(row).items() if k != "config_key"} for row in rows]
    return json.dumps({"runs": runs, "disagreements": [asdict(p) for p in problems]}, indent=2)


def figure(rows: list[RunRow]) -> Figure:
    """RMSE and per-step time by run, side by side; the legend sits beside the bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taxipipe.pipeline import STEP_NAMES

    labels = [f"{row.runner}\n{row.partition}\n{row.kind} {row.feature_mode}" for row in rows]
    chart, (left, right) = plt.subplots(1, 2, figsize=(max(9, 2.2 * len(rows) + 2), 5))
    left.bar(labels, [row.rmse for row in rows], color="tab:blue")
    left.set(title="Validation RMSE (minutes)", ylabel="RMSE")
    bottom = [0.0] * len(rows)
    for name in STEP_NAMES:
        heights = [row.step_seconds.get(name, 0.0) for row in rows]
        if any(heights):
            right.bar(labels, heights, bottom=bottom, label=name)
            bottom = [b + h for b, h in zip(bottom, heights)]
    right.set(title="Step time by run", ylabel="seconds")
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    chart.tight_layout()
    return chart


def plot(rows: list[RunRow], path: Path) -> None:
    """Write `figure` as a PNG."""
    import matplotlib.pyplot as plt

    chart = figure(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(chart)


def report(settings: Settings, latest_only: bool, as_machine: bool, plot_path: Path | None,
           check: bool) -> tuple[str, int]:
    """The text (table or JSON) and the exit status of `taxipipe compare`.

    Only `check` judges the runs: it adds the verdict and fails when runs disagree or none exist.
    """
    rows = collect(settings, latest_only)
    problems = disagreements(rows)
    if plot_path is not None and rows:
        plot(rows, plot_path)
    if as_machine:
        text = as_json(rows, problems)
    elif not rows:
        text = f"no runs yet in {settings.tracking_uri()} (experiments {settings.mlflow.experiment_name})"
    else:
        verdict = ["⚠️  " + p.describe() for p in problems] or [
            f"✅ runs on the same data and config agree on RMSE (within {RMSE_AGREEMENT:g})"]
        text = "\n".join([table(rows), *(["", *verdict] if check else [])])
    status = 1 if check and (problems or not rows) else 0
    return text, status
