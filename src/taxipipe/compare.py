"""Compare what each runner recorded in MLflow: one row per run, and a consistency check.

Every runner trains the same model on the same data and config, so runs that share the data
partition and the parameters must agree on RMSE; a difference beyond `RMSE_AGREEMENT` is a bug.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from taxipipe import tracking
from taxipipe.config import Settings

RMSE_AGREEMENT = 1e-6
EXPERIMENT_PREFIX = "orchestration-pipeline-"
STEP_METRIC = "step_seconds."
SHORT_NAMES = {"validate_data": "val_data", "validate_model": "val_model", "transform": "transform"}


@dataclass
class RunRow:
    runner: str
    partition: str
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
    feature_mode: str
    runs: dict[str, float]

    def describe(self) -> str:
        values = ", ".join(f"{run_id[:8]}={rmse:.6f}" for run_id, rmse in self.runs.items())
        return f"{self.partition} {self.feature_mode}: same data and config, RMSE differs ({values})"


def collect(settings: Settings, latest_only: bool = True) -> list[RunRow]:
    """The runs of every `orchestration-pipeline-*` experiment that finished training."""
    client = tracking.client(settings)
    experiments = [e for e in client.search_experiments() if e.name.startswith(EXPERIMENT_PREFIX)]
    if not experiments:
        return []
    champion = tracking.champion_version(client, settings.mlflow.model_name)
    champion_run = champion.run_id if champion is not None else None
    rows: list[RunRow] = []
    seen: set[tuple[str, str, str]] = set()
    runs = client.search_runs([e.experiment_id for e in experiments], "metrics.rmse > 0",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        runner = tags.get("runner", "?")
        identity = (runner, tags.get("partition", "?"), tags.get("feature_mode", "?"))
        if latest_only and identity in seen:
            continue
        seen.add(identity)
        steps = {k[len(STEP_METRIC):]: v for k, v in metrics.items() if k.startswith(STEP_METRIC)}
        rows.append(RunRow(
            runner=runner, partition=identity[1], feature_mode=identity[2], rmse=metrics["rmse"],
            total_seconds=round(sum(steps.values()), 3), step_seconds=steps, run_id=run.info.run_id,
            start_time=datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            champion=run.info.run_id == champion_run,
            config_key=json.dumps(sorted(run.data.params.items())),
        ))
    return sorted(rows, key=lambda row: (row.partition, row.feature_mode, row.runner))


def disagreements(rows: list[RunRow]) -> list[Disagreement]:
    """Groups of runs with the same data and config whose RMSE spread exceeds RMSE_AGREEMENT."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(row.config_key, []).append(row)
    found = []
    for members in groups.values():
        scores = [row.rmse for row in members]
        if max(scores) - min(scores) > RMSE_AGREEMENT:
            found.append(Disagreement(members[0].partition, members[0].feature_mode,
                                      {row.run_id: row.rmse for row in members}))
    return found


def table(rows: list[RunRow]) -> str:
    """A fixed-width table: one line per run, step times in pipeline order."""
    from taxipipe.pipeline import STEP_NAMES

    steps = [name for name in STEP_NAMES if any(name in row.step_seconds for row in rows)]
    short = {name: SHORT_NAMES.get(name, name) for name in steps}
    head = (f"{'runner':<9}{'partition':<15}{'features':<12}{'RMSE':>9}{'total s':>9}"
            + "".join(f"{short[name]:>10}" for name in steps) + f"  {'run id':<34}{'started (UTC)':<21}champion")
    lines = [head, "-" * len(head)]
    for row in rows:
        times = "".join(f"{row.step_seconds.get(name, float('nan')):>10.2f}" for name in steps)
        lines.append(f"{row.runner:<9}{row.partition:<15}{row.feature_mode:<12}{row.rmse:>9.4f}"
                     f"{row.total_seconds:>9.2f}{times}  {row.run_id:<34}{row.start_time:<21}"
                     f"{'🏆' if row.champion else ''}")
    return "\n".join(lines)


def as_json(rows: list[RunRow], problems: list[Disagreement]) -> str:
    runs = [{k: v for k, v in asdict(row).items() if k != "config_key"} for row in rows]
    return json.dumps({"runs": runs, "disagreements": [asdict(p) for p in problems]}, indent=2)


def plot(rows: list[RunRow], path: Path) -> None:
    """RMSE and per-step time by runner, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taxipipe.pipeline import STEP_NAMES

    labels = [f"{row.runner}\n{row.partition}\n{row.feature_mode}" for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(rows)), 5))
    left.bar(labels, [row.rmse for row in rows], color="tab:blue")
    left.set(title="Validation RMSE (minutes)", ylabel="RMSE")
    bottom = [0.0] * len(rows)
    for name in STEP_NAMES:
        heights = [row.step_seconds.get(name, 0.0) for row in rows]
        if any(heights):
            right.bar(labels, heights, bottom=bottom, label=name)
            bottom = [b + h for b, h in zip(bottom, heights)]
    right.set(title="Step time by runner", ylabel="seconds")
    right.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def report(settings: Settings, latest_only: bool, as_machine: bool, plot_path: Path | None,
           check: bool) -> tuple[str, int]:
    """The text (table or JSON) and the exit status of `taxipipe compare`."""
    rows = collect(settings, latest_only)
    problems = disagreements(rows)
    if plot_path is not None and rows:
        plot(rows, plot_path)
    if as_machine:
        text = as_json(rows, problems)
    elif not rows:
        text = f"no runs yet in experiments {EXPERIMENT_PREFIX}* of {settings.tracking_uri()}"
    else:
        verdict = ["⚠️  " + p.describe() for p in problems] or [
            f"✅ runs on the same data and config agree on RMSE (within {RMSE_AGREEMENT:g})"]
        text = "\n".join([table(rows), "", *verdict])
    status = 1 if check and (problems or not rows) else 0
    return text, status

