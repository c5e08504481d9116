"""The pipeline as a Prefect 3 flow: one task per step, each task one call into the steps.

Tasks hand each other the steps' small records, never data: the data stays in files under
the project home. Every step task except extract and cleanup is cached across flow runs
(see `prefect_policies`), with its result persisted in {home}/prefect/results, so a rerun
after a failed train starts at train. Run it with examples/prefect_pipeline.py, or deploy it
unchanged (prefect.yaml, or `serve`, see docs/prefect.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import Task, flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE, TASK_SOURCE
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.tasks import exponential_backoff

from taxipipe import console, steps
from taxipipe.config import Settings, load_settings
from taxipipe.errors import TaxipipeError
from taxipipe.layout import Layout
from taxipipe.pipeline import BY_NAME, run_step
from taxipipe.runners.prefect_policies import StepInputs, retryable
from taxipipe.runners.simple import StepFailed
from taxipipe.steps import ROLES, Record, StepContext

RUNNER = "prefect"
CACHED: dict[str, Any] = {"cache_policy": StepInputs() + TASK_SOURCE, "persist_result": True,
                          "result_serializer": "json"}
#: TLC publishes a month about two months after it ends, so three months back is surely out:
#: a run due in May validates on February and trains on January.
VALIDATION_LAG_MONTHS = 3


def _context(settings: Settings) -> StepContext:
    """The steps' context; the MLflow run gets this flow run's id and name as tags."""
    tags = {"prefect_flow_run_id": str(flow_run.id), "prefect_flow_run_name": str(flow_run.name)}
    return StepContext(settings, runner=RUNNER, tags=tags)


def _run(name: str, settings: Settings, **upstream: Record) -> Record:
    return run_step(BY_NAME[name], _context(settings), upstream)


@task(name="extract", task_run_name="extract-{role}", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
      retry_condition_fn=retryable)
def extract_month(settings: Settings, role: str) -> Record:
    """Download one month; the download cache makes it a footer check when the file is there."""
    return steps.extract_month(_context(settings), role)


@task(name="validate_data", **CACHED)
def validate_data(settings: Settings, extract: Record) -> Record:
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


class _Steps:
    """Calls the step tasks of one flow run and keeps their records and final states."""

    def __init__(self, settings: Settings, refresh: bool) -> None:
        self.settings = settings
        self.refresh = refresh
        self.layout = Layout(settings.home, settings.partition)
        self.results = settings.home / "prefect" / "results"
        self.records: dict[str, Record] = {}
        self.states: dict[str, str] = {}

    def extract(self) -> Record:
        """Both months, submitted together so the two downloads overlap."""
        started = time.perf_counter()
        futures = [extract_month.submit(self.settings, role) for role in ROLES]
        wait(futures)
        record = steps.combine_extracts([self._result("extract", f.state) for f in futures],
                                        seconds=time.perf_counter() - started)
        return self._keep("extract", record, "Completed")

    def __call__(self, step_task: Task[..., Record], **upstream: Record) -> Record:
        """Run one step task; recompute it when asked to or when its output files are gone."""
        step = BY_NAME[step_task.name]
        outputs_gone = not all(path.exists() for path in step.writes(self.layout))
        configured = step_task.with_options(result_storage=self.results,
                                            refresh_cache=(self.refresh or outputs_gone) or None)
        state = configured(self.settings, **upstream, return_state=True)
        return self._keep(step.name, self._result(step.name, state), state.name)

    def _result(self, name: str, state: State[Record]) -> Record:
        """The task's record; a user-facing error becomes StepFailed, a bug keeps its traceback."""
        if not state.is_completed():
            error = state.result(raise_on_failure=False)
            console.task_failed(name, str(error))
            if not isinstance(error, TaxipipeError):
                state.result()
            raise StepFailed(name, str(error)) from error
        return state.result()

    def _keep(self, name: str, record: Record, state_name: str) -> Record:
        self.records[name] = record
        self.states[name] = state_name
        if state_name == "Cached":
            console.task_up_to_date(name)
        else:
            console.task_done(name, record["seconds"], record.get("summary"))
        return record


def flow_settings(color: str | None, year: int | None, month: int | None,
                  config: str | None, overrides: dict[str, Any] | None) -> Settings:
    """The settings of a flow run: the flow's parameters over the config file and TAXIPIPE_* env."""
    tables = dict(overrides or {})
    given = {"color": color, "year": year, "month": month}
    tables["data"] = {**tables.get("data", {}), **{k: v for k, v in given.items() if v is not None}}
    return load_settings(Path(config) if config else None, tables)


def due_month(year: int, month: int) -> tuple[int, int]:
    """The training month of a run due in year-month (see VALIDATION_LAG_MONTHS)."""
    index = year * 12 + month - 1 - VALIDATION_LAG_MONTHS - 1
    return index // 12, index % 12 + 1


def report_markdown(settings: Settings, records: dict[str, Record], states: dict[str, str]) -> str:
    """The run's report: RMSE, row counts, and each step's state and time."""
    partition = settings.partition
    lines = [f"# ml-pipeline: {partition.color} {partition.label} "
             f"(validation {partition.next().label})", ""]
    trained = records.get("train")
    if trained:
        lines += [f"**RMSE:** {trained['rmse']:.4f} (MLflow run `{trained['run_id']}`)", ""]
    if "deploy" in records:
        lines += [f"**Deployment:** {records['deploy']['summary']}", ""]
    transformed = records.get("transform")
    if transformed:
        lines += ["| month | rows read | rides kept |", "|---|---:|---:|"]
        lines += [f"| {role} | {transformed[role]['rows_in']:,} | {transformed[role]['rows']:,} |"
                  for role in ROLES]
        lines.append("")
    lines += ["| step | state | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {states[name]} | {record['seconds']:.2f} |"
              for name, record in records.items()]
    lines += ["", "Cached steps show the time they took when they ran."]
    return "\n".join(lines) + "\n"


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
        scheduled = flow_run.scheduled_start_time
        year, month = due_month(scheduled.year, scheduled.month)
    try:
        settings = flow_settings(color, year, month, config, overrides)
        console.header(RUNNER, settings, target="cleanup" if cleanup else "deploy")
        run = _Steps(settings, refresh)
        extracted = run.extract()
        checked = run(validate_data, extract=extracted)
        cleaned = run(transform, validate_data=checked)
        encoded = run(features, transform=cleaned)
        trained = run(train, features=encoded)
        verdict = run(validate_model, train=trained)
        saved = run(save, train=trained, validate_model=verdict)
        deployed = run(deploy, validate_model=verdict, save=saved)
        if cleanup:
            run(remove_intermediates, deploy=deployed)
    except (StepFailed, TaxipipeError) as failure:
        return Failed(message=str(failure))
    partition = settings.partition
    create_markdown_artifact(key=f"ml-pipeline-{partition.color}-{partition.label}",
                             markdown=report_markdown(settings, run.records, run.states),
                             description="RMSE, row counts and step times of this run")
    console.final_summary(run.records)
    return run.records
