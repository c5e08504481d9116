"""The runs each runner recorded in MLflow, one row each, and the consistency check.

Every runner trains the same model on the same data and config, so runs that share the data
partition and the parameters must agree on RMSE; a difference beyond `RMSE_AGREEMENT` is a bug.
Each row also says what the run cost: its wall time (`taxipipe.walltime`), the sum of the times
of the steps that ran in that run (not those it reused, up to date or cached), and the
difference, the overhead of the engine that ran the steps.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from taxipipe import tracking
from taxipipe.config import Settings
from taxipipe.layout import Home
from taxipipe.models.base import RMSE_AGREEMENT
from taxipipe.walltime import REUSED_TAG, WALL_METRIC

STEP_METRIC = "step_seconds."


@dataclass
class RunRow:
    runner: str
    partition: str  # the training window: green/2021-01, or green/2023-01..2023-03
    kind: str
    feature_mode: str
    compute: str  # memory, external or dask
    rmse: float
    wall_seconds: float | None  # the whole run as its user waited for it (None: not recorded)
    steps_seconds: float  # the sum of the times of the steps that ran in this run
    overhead_seconds: float | None  # wall minus steps: what the engine added
    step_seconds: dict[str, float]
    run_id: str
    start_time: str
    champion: bool
    config_key: str = field(repr=False)
    reused_steps: list[str] = field(default_factory=list)  # up to date or cached: an earlier run's work


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
    return settings.mlflow.tracking_uri is None and not Home(settings.home).mlflow_store.exists()


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
        reused = [step for step in tags.get(REUSED_TAG, "").split(",") if step]
        steps = {k[len(STEP_METRIC):]: v for k, v in metrics.items()
                 if k.startswith(STEP_METRIC) and k[len(STEP_METRIC):] not in reused}
        total, wall = round(sum(steps.values()), 3), metrics.get(WALL_METRIC)
        rows.append(RunRow(
            runner=runner, partition=identity[1], kind=identity[2], feature_mode=identity[3],
            compute=tags.get("compute", "memory"), rmse=metrics["rmse"], wall_seconds=wall,
            steps_seconds=total, overhead_seconds=None if wall is None else round(wall - total, 3),
            step_seconds=steps, run_id=run.info.run_id,
            start_time=datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M"),
            champion=run.info.run_id == champion_run,
            config_key=json.dumps(sorted(run.data.params.items())), reused_steps=reused,
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


def champion_elsewhere(settings: Settings, rows: list[RunRow]) -> str | None:
    """Where the champion is when none of `rows` holds it (None when one does)."""
    if any(row.champion for row in rows):
        return None
    name = settings.mlflow.model_name
    client = tracking.client(settings)
    version = tracking.champion_version(client, name)
    if version is None:
        return f"no champion yet: no version of model {name} holds the alias '{tracking.CHAMPION}'"
    run = client.get_run(version.run_id)
    tags, started = run.data.tags, datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc)
    experiment = client.get_experiment(run.info.experiment_id).name
    where = ("an earlier run that `taxipipe compare --all` lists" if experiment_pattern(settings).match(experiment)
             else f"a run of experiment {experiment}")
    return (f"the champion ({name} version {version.version}) is {where}: run {run.info.run_id[:8]}, "
            f"{tags.get('runner', '?')}, {tags.get('window', tags.get('partition', '?'))}, "
            f"RMSE {run.data.metrics.get('rmse', float('nan')):.4f}, started {started:%Y-%m-%d %H:%M} UTC")
