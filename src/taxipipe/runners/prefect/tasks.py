"""The pipeline's Prefect 3 tasks: one per step of the graph, each one call into the steps.

A task takes its upstream steps' records as keyword arguments named after them (the
per-month extract takes one month). A task run is named as the other runners name the node
(`extract[2021-01]`, `train`), not with Prefect's random suffix. Tasks hand each other the steps' small records, never
data: the data stays in files under the project home. Every task except extract and cleanup
is cached across flow runs (see `policies`); extract and train retry with backoff
when the error is one a retry can fix.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from taxipipe.config import Settings
from taxipipe.partition import Partition
from taxipipe.pipeline import BY_NAME, by_node, month_node, run_step
from taxipipe.runners.prefect.policies import StepInputs, retryable
from taxipipe.steps import Record, StepContext, run_key_of

RUNNER = "prefect"
CACHED: dict[str, Any] = {"cache_policy": StepInputs(), "persist_result": True, "result_serializer": "json"}


def _context(settings: Settings) -> StepContext:
    """The steps' context; the MLflow run gets this flow run's id and name as tags."""
    tags = {"prefect_flow_run_id": str(flow_run.id), "prefect_flow_run_name": str(flow_run.name)}
    return StepContext(settings, runner=RUNNER, tags=tags, run_key=run_key_of(str(flow_run.id)))


def _run(name: str, settings: Settings, **upstream: Any) -> Record:
    """Run step `name` with its upstream records (a per-month step's come as a list)."""
    return run_step(BY_NAME[name], _context(settings), by_node(upstream))


@task(name="extract", task_run_name="extract[{month}]", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
      retry_condition_fn=retryable)
def extract(settings: Settings, month: str) -> Record:
    """Download one month; the download cache makes it a footer check when the file is there."""
    return run_step(month_node("extract", Partition.parse(settings.data.color, month)), _context(settings), {})


@task(name="validate_data", task_run_name="validate_data", **CACHED)
def validate_data(settings: Settings, extract: list[Record]) -> Record:
    return _run("validate_data", settings, extract=extract)


@task(name="transform", task_run_name="transform", **CACHED)
def transform(settings: Settings, validate_data: Record) -> Record:
    return _run("transform", settings, validate_data=validate_data)


@task(name="features", task_run_name="features", **CACHED)
def features(settings: Settings, transform: Record) -> Record:
    return _run("features", settings, transform=transform)


@task(name="train", task_run_name="train", retries=1, retry_delay_seconds=exponential_backoff(backoff_factor=5),
      retry_jitter_factor=0.5, retry_condition_fn=retryable, **CACHED)
def train(settings: Settings, features: Record) -> Record:
    return _run("train", settings, features=features)


@task(name="validate_model", task_run_name="validate_model", **CACHED)
def validate_model(settings: Settings, train: Record) -> Record:
    return _run("validate_model", settings, train=train)


@task(name="save", task_run_name="save", **CACHED)
def save(settings: Settings, train: Record, validate_model: Record) -> Record:
    return _run("save", settings, train=train, validate_model=validate_model)


@task(name="deploy", task_run_name="deploy", **CACHED)
def deploy(settings: Settings, validate_model: Record, save: Record) -> Record:
    return _run("deploy", settings, validate_model=validate_model, save=save)


@task(name="cleanup", task_run_name="cleanup", cache_policy=NO_CACHE)
def remove_intermediates(settings: Settings, deploy: Record) -> Record:
    return _run("cleanup", settings, deploy=deploy)


#: The task of every step of the graph (a test checks each takes its upstream steps' records).
TASKS: dict[str, Task[..., Record]] = {
    "extract": extract, "validate_data": validate_data, "transform": transform, "features": features,
    "train": train, "validate_model": validate_model, "save": save, "deploy": deploy,
    "cleanup": remove_intermediates,
}
