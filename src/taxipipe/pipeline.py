"""The pipeline declared once, as data: steps, their order, files and config keys.

Runners read this graph; they decide when and where each step runs, never what it does.
The make runner hashes exactly the files and config keys declared here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from taxipipe import steps
from taxipipe.layout import Layout
from taxipipe.steps import Record, StepContext, Upstream

PathsOf = Callable[[Layout], list[Path]]


@dataclass(frozen=True)
class Step:
    """One node of the graph."""

    name: str
    run: Callable[[StepContext, Upstream], Record]
    upstream: tuple[str, ...]
    reads: PathsOf
    writes: PathsOf
    config_keys: tuple[str, ...]
    description: str


def _raw(layout: Layout) -> list[Path]:
    return [layout.train_raw, layout.validation_raw]


def _clean(layout: Layout) -> list[Path]:
    return [layout.train_clean, layout.validation_clean]


def _features(layout: Layout) -> list[Path]:
    return [layout.encoder, layout.train_features, layout.validation_features]


def _none(layout: Layout) -> list[Path]:
    return []


DATA_KEYS = ("data.color", "data.year", "data.month")
REGISTRY_KEYS = ("mlflow.tracking_uri", "mlflow.model_name")

STEPS: tuple[Step, ...] = (
    Step("extract", steps.extract, (), _none, _raw, (*DATA_KEYS, "data.url_template"),
         "download the training month and the next one"),
    Step("validate_data", steps.validate_data, ("extract",), _raw, _none,
         ("data.color", "validation.min_positive_duration_share", "validation.max_invalid_row_share"),
         "check schema and quality rules"),
    Step("transform", steps.transform, ("validate_data",), _raw, _clean, ("data.color",),
         "duration in minutes, keep 1..60"),
    Step("features", steps.features, ("transform",), _clean, _features, ("model.features",),
         "fit the encoder, encode both months"),
    Step("train", steps.train, ("features",), _features, lambda layout: [layout.booster],
         ("model.params", "model.early_stopping_rounds", "mlflow.experiment_name",
          *REGISTRY_KEYS[:1]),
         "train XGBoost, track the run in MLflow"),
    Step("validate_model", steps.validate_model, ("train",), lambda layout: [layout.validation_clean],
         _none, ("validation.min_rmse", "validation.max_rmse", "validation.champion_tolerance",
                 *REGISTRY_KEYS),
         "gate on RMSE bounds and the champion"),
    Step("save", steps.save, ("train", "validate_model"),
         lambda layout: [layout.encoder, layout.booster, layout.validation_clean], _none, (),
         "log the pyfunc model and a plot"),
    Step("deploy", steps.deploy, ("validate_model", "save"), _none,
         lambda layout: [layout.deployment_record], REGISTRY_KEYS,
         "register the version, move 'champion' if allowed"),
    Step("cleanup", steps.cleanup, ("deploy",), _none, _none, ("artifacts.keep_downloads",),
         "remove the partition's intermediates"),
)

STEP_NAMES = tuple(step.name for step in STEPS)
BY_NAME = {step.name: step for step in STEPS}


def chain(target: str) -> list[Step]:
    """`target` and every step it depends on, in run order."""
    if target not in BY_NAME:
        raise KeyError(target)
    needed: set[str] = set()
    pending = [target]
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(BY_NAME[name].upstream)
    return [step for step in STEPS if step.name in needed]


def run_step(step: Step, ctx: StepContext, upstream: Upstream) -> Record:
    """Run one step and time it.

    The record gains `seconds` and `timings`: the times of this step and of every step
    upstream of it. Once an MLflow run exists (train on), the times are logged to it.
    """
    started = time.perf_counter()
    record = step.run(ctx, upstream)
    record["seconds"] = round(time.perf_counter() - started, 3)
    timings: dict[str, float] = {}
    for previous in upstream.values():
        timings.update(previous.get("timings", {}))
    timings[step.name] = record["seconds"]
    record["timings"] = timings
    run_id = record.get("run_id") or next(
        (previous["run_id"] for previous in upstream.values() if "run_id" in previous), None
    )
    if run_id is not None:
        from taxipipe import tracking

        logged = timings if step.name == "train" else {step.name: record["seconds"]}
        tracking.log_step_seconds(tracking.client(ctx.settings), run_id, logged)
    return record
