"""The pipeline as a Prefect 3 flow: one task per step, each task one call into the steps.

The flow walks the graph (`taxipipe.pipeline.STEPS`): a per-month step (extract) is
submitted once per month, so the downloads run at once as futures; every other task takes
its upstream steps' records as keyword arguments named after them. Tasks hand each other the
steps' small records, never data: the data stays in files under the project home. Every
step task except extract and cleanup is cached across flow runs (see `prefect_policies`),
with its result persisted in {home}/prefect/results, so a rerun after a failed train starts
at train. Run it with examples/prefect_pipeline.py, or deploy it unchanged (prefect.yaml, or
`serve`, see docs/prefect.md).
"""

from __future__ import annotations

from typing import Any

from prefect import Task, flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.tasks import exponential_backoff

from taxipipe import console
from taxipipe.config import Settings, load_settings, merge
from taxipipe.errors import StepFailed, TaxipipeError
from taxipipe.partition import Partition, scheduled_training_month
from taxipipe.pipeline import BY_NAME, STEPS, Step, by_node, month_node, run_step
from taxipipe.runners.prefect_policies import StepInputs, retryable
from taxipipe.steps import Record, StepContext

RUNNER = "prefect"
CACHED: dict[str, Any] = {"cache_policy": StepInputs(), "persist_result": True, "result_serializer": "json"}


def _context(settings: Settings) -> StepContext:
    """The steps' context; the MLflow run gets this flow run's id and name as tags."""
    tags = {"prefect_flow_run_id": str(flow_run.id), "prefect_flow_run_name": str(flow_run.name)}
    return StepContext(settings, runner=RUNNER, tags=tags)


def _run(name: str, settings: Settings, **upstream: Any) -> Record:
    """Run step `name` with its upstream records (a per-month step's come as a list)."""
    return run_step(BY_NAME[name], _context(settings), by_node(upstream))


@task(name="extract", task_run_name="extract[{month}]", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
      retry_condition_fn=retryable)
def extract(settings: Settings, month: str) -> Record:
    """Download one month; the download cache makes it a footer check when the file is there."""
    return run_step(month_node("extract", Partition.parse(settings.data.color, month)), _context(settings), {})


@task(name="validate_data", **CACHED)
def validate_data(settings: Settings, extract: list[Record]) -> Record:
    return _run("validate_data", settings, extract=extract)


@task(name="transform", **CACHED)
def transform(settings: Settings, validate_data: Record) -> Record:
    return _run("transform", settings, validate_data=validate_data)


@task(name="features", **CACHED)
def features(settings: Settings, transform: Record) -> Record:
    return _run("features", settings, transform=transform)


@task(name="train", retries=1, retry_delay_seconds=exponential_backoff(backoff_factor=5),
      retry_jitter_factor=0.5, retry_condition_fn=retryable, **CACHED)
def train(settings: Settings, features: Record) -> Record:
    return _run("train", settings, features=features)


@task(name="validate_model", **CACHED)
def validate_model(settings: Settings, train: Record) -> Record:
    return _run("validate_model", settings, train=train)


@task(name="save", **CACHED)
def save(settings: Settings, train: Record, validate_model: Record) -> Record:
    return _run("save", settings, train=train, validate_model=validate_model)


@task(name="deploy", **CACHED)
def deploy(settings: Settings, validate_model: Record, save: Record) -> Record:
    return _run("deploy", settings, validate_model=validate_model, save=save)


@task(name="cleanup", cache_policy=NO_CACHE)
def remove_intermediates(settings: Settings, deploy: Record) -> Record:
    return _run("cleanup", settings, deploy=deploy)


#: The task of every step of the graph (a test checks each takes its upstream steps' records).
TASKS: dict[str, Task[..., Record]] = {
    "extract": extract, "validate_data": validate_data, "transform": transform, "features": features,
    "train": train, "validate_model": validate_model, "save": save, "deploy": deploy,
    "cleanup": remove_intermediates,
}


class _Steps:
    """Calls the step tasks of one flow run and keeps their records and final states."""

    def __init__(self, settings: Settings, refresh: bool) -> None:
        self.settings, self.refresh = settings, refresh
        self.context = StepContext(settings, runner=RUNNER)
        self.records: dict[str, Any] = {}
        self.states: dict[str, str] = {}

    def __call__(self, step: Step) -> None:
        """Run one step's task (per month: all months at once); recompute it when asked to or
        when its output files are gone."""
        step_task = TASKS[step.name]
        if step.per_month:
            futures = {month: step_task.submit(self.settings, month.label) for month in self.settings.months}
            wait(list(futures.values()))
            self.records[step.name] = [self._keep(month_node(step.name, month).name, future.state)
                                       for month, future in futures.items()]
            return
        outputs_gone = not all(path.exists() for path in step.writes(self.context))
        configured = step_task.with_options(result_storage=self.settings.home / "prefect" / "results",
                                            refresh_cache=(self.refresh or outputs_gone) or None)
        upstream = {name: self.records[name] for name in step.upstream}
        self.records[step.name] = self._keep(step.name, configured(self.settings, **upstream, return_state=True))

    def _keep(self, name: str, state: State[Record]) -> Record:
        """The task's record; a user-facing error becomes StepFailed, a bug keeps its traceback."""
        if not state.is_completed():
            error = state.result(raise_on_failure=False)
            console.task_failed(name, str(error))
            if not isinstance(error, TaxipipeError):
                state.result()
            raise StepFailed(name, str(error)) from error
        record = state.result()
        self.states[name] = state.name
        if state.name == "Cached":
            console.task_up_to_date(name)
        else:
            console.task_done(name, record["seconds"], record.get("summary"))
        return record


def flow_settings(color: str | None, year: int | None, month: int | None,
                  config: str | None, overrides: dict[str, Any] | None) -> Settings:
    """The settings of a flow run: the flow's parameters over the config file and TAXIPIPE_* env."""
    given = {"color": color, "year": year, "month": month}
    return load_settings(config, merge(overrides, {"data": {k: v for k, v in given.items() if v is not None}}))


@flow(name="ml-pipeline", description="NYC taxi trip duration: extract, validate, train, deploy.")
def ml_pipeline(color: str | None = None, year: int | None = None, month: int | None = None,
                config: str | None = None, overrides: dict[str, Any] | None = None,
                latest: bool = False, refresh: bool = False,
                cleanup: bool = False) -> dict[str, Record] | State[Any]:
    """Train on one month and validate on the next.

    Unset color/year/month come from the config file and TAXIPIPE_* environment; `latest`
    picks the newest month TLC has published by the run's scheduled time instead (what the
    monthly deployment uses). `refresh` recomputes every step; `cleanup` removes the
    partition's intermediates at the end, so the next run recomputes transform and features.
    """
    if latest:
        due = scheduled_training_month("", flow_run.scheduled_start_time)
        year, month = due.year, due.month
    try:
        settings = flow_settings(color, year, month, config, overrides)
        console.header(RUNNER, settings, target="cleanup" if cleanup else "deploy")
        run = _Steps(settings, refresh)
        for step in STEPS:
            if cleanup or step.name != "cleanup":
                run(step)
    except (StepFailed, TaxipipeError) as failure:
        return Failed(message=str(failure))
    partition = settings.partition
    create_markdown_artifact(key=f"ml-pipeline-{partition.color}-{partition.label}",
                             markdown=console.markdown_report(settings, by_node(run.records), run.states),
                             description="RMSE, row counts and step times of this run")
    console.final_summary(run.records)
    return by_node(run.records)
