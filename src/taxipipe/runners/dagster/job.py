"""The pipeline as a Dagster job: one op per step of the graph, partitioned by training month.

The job is built from `taxipipe.pipeline.STEPS`: the per-month step (extract) is mapped over
the months the run reads (a dynamic output of the op `months`, collected for validate_data),
every other op takes its upstream steps' records as inputs named after them. A partition is
a training month (`MonthlyPartitionsDefinition`), so a backfill over months is Dagster's own;
the partitions start at the colour's first published month (`FIRST_MONTHS`, the colour of the
settings Dagster loads the job with) and end at the newest month whose validation month the
TLC has surely published (`PUBLICATION_LAG_MONTHS`). Ops retry with exponential backoff, except on the
errors no retry can fix (`errors.PERMANENT_ERRORS`): those fail the op at once. The MLflow
run is tagged with the Dagster run id. A launched run forks each op from a server that has
imported the pipeline's libraries once (`EXECUTOR`). Dagster loads
`taxipipe.runners.dagster.definitions`.

No `from __future__ import annotations` here: Dagster reads the ops' annotations as types.
"""

import json
import os
from pathlib import Path
from typing import Any, Iterator

from dagster import (
    Backoff,
    ConfigurableResource,
    DagsterInstance,
    DynamicOut,
    DynamicOutput,
    ExecuteInProcessResult,
    Failure,
    In,
    JobDefinition,
    Jitter,
    MonthlyPartitionsDefinition,
    OpDefinition,
    OpExecutionContext,
    RetryPolicy,
    job,
    multiprocess_executor,
    op,
)

from taxipipe import console
from taxipipe.config import Settings, load_settings, merge
from taxipipe.errors import PERMANENT_ERRORS, TaxipipeError
from taxipipe.partition import PUBLICATION_LAG_MONTHS, Partition
from taxipipe.pipeline import STEPS, Step, by_node, month_node
from taxipipe.runners.session import Session, run_task
from taxipipe.steps import STEP_LIBRARIES, Record, StepContext, run_key_of

RUNNER = "dagster"
JOB_NAME = "taxi_duration_pipeline"
#: The first month of each colour's trip records the TLC publishes.
FIRST_MONTHS = {"green": "2013-08-01", "yellow": "2009-01-01"}
RETRY = RetryPolicy(max_retries=2, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
DOWNLOAD_RETRY = RetryPolicy(max_retries=5, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
#: What every step would otherwise import in a fresh interpreter of its own (about 4 s of CPU each).
STEP_IMPORTS = ["taxipipe.runners.dagster.job", *STEP_LIBRARIES]
#: Each step in a process of its own (Dagster's default), forked from a server that imported
#: STEP_IMPORTS once per run (Dagster's forkserver start method).
EXECUTOR = multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": STEP_IMPORTS}}}, name="multiprocess_forkserver")


class TaxipipeSettings(ConfigurableResource):
    """The run's settings: defaults < config file < TAXIPIPE_* env < `overrides` < partition."""

    config_file: str | None = None
    overrides: str = "{}"

    def for_partition(self, key: str | None) -> Settings:
        """The settings of partition `key` (`2021-01-01`: train on 2021-01)."""
        month = {"data": {"year": int(key[:4]), "month": int(key[5:7])}} if key else {}
        return load_settings(self.config_file, merge(json.loads(self.overrides), month))


def step_context(context: OpExecutionContext) -> StepContext:
    """The StepContext of an op; the MLflow run gets the Dagster run id as a tag."""
    key = context.partition_key if context.has_partition_key else None
    settings = context.resources.taxipipe.for_partition(key)
    return StepContext(settings, runner=RUNNER, tags={"dagster.run_id": context.run_id,
                                                      "dagster.job": context.job_name},
                       run_key=run_key_of(context.run_id))


def _run(step: Step, ctx: StepContext, upstream: dict[str, Record]) -> Record:
    """Run one node and print its line as it ends (in order with whatever the step printed);
    an error no retry can fix fails the op at once."""
    try:
        return run_task(step, ctx, upstream)
    except PERMANENT_ERRORS as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc


@op(out=DynamicOut(str), required_resource_keys={"taxipipe"})
def months(context: OpExecutionContext) -> Iterator[DynamicOutput[str]]:
    """The months the run reads (training months, then validation): one extract each."""
    for month in step_context(context).settings.months:
        yield DynamicOutput(month.label, mapping_key=month.label.replace("-", "_"))


def step_op(step: Step) -> OpDefinition:
    """The op of one step: per month (input `month`) or on its upstream steps' records."""
    if step.per_month:
        @op(name=step.name, description=step.description, retry_policy=DOWNLOAD_RETRY,
            required_resource_keys={"taxipipe"})
        def per_month(context: OpExecutionContext, month: str) -> Record:
            ctx = step_context(context)
            return _run(month_node(step.name, Partition.parse(ctx.settings.data.color, month)), ctx, {})

        return per_month

    @op(name=step.name, description=step.description, ins={name: In() for name in step.upstream},
        retry_policy=RETRY, required_resource_keys={"taxipipe"})
    def on_records(context: OpExecutionContext, **upstream: Any) -> Record:
        return _run(step, step_context(context), by_node(upstream))

    return on_records


OPS = {step.name: step_op(step) for step in STEPS}


def partitions(color: str) -> MonthlyPartitionsDefinition:
    """The training months of `color`: its first published month to the newest surely published."""
    return MonthlyPartitionsDefinition(start_date=FIRST_MONTHS[color], end_offset=-PUBLICATION_LAG_MONTHS)


def job_for(color: str) -> JobDefinition:
    """The job, partitioned over the training months of `color`."""
    @job(name=JOB_NAME, partitions_def=partitions(color), resource_defs={"taxipipe": TaxipipeSettings()},
         executor_def=EXECUTOR,
         description="NYC taxi trip duration: train on a month, validate on the next, register in MLflow.")
    def taxi_duration_pipeline() -> None:
        outputs: dict[str, Any] = {}
        for step in STEPS:
            if step.per_month:
                outputs[step.name] = months().map(OPS[step.name]).collect()
            else:
                outputs[step.name] = OPS[step.name](**{name: outputs[name] for name in step.upstream})

    return taxi_duration_pipeline


#: The job Dagster loads: partitioned by the colour of the settings (config file, TAXIPIPE_* env).
taxi_duration_pipeline = job_for(load_settings().data.color)
PARTITIONS = taxi_duration_pipeline.partitions_def


def use_dagster_home(home: Path) -> Path:
    """Point DAGSTER_HOME at {home}/dagster (runs, logs, schedules), telemetry off."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


def run_example(settings: Settings, started: float) -> dict[str, Record]:
    """Run the job once in this process on the partition of `settings`, in a session that
    holds the home, prints the common lines and records the wall time since `started`."""
    session = Session(settings, RUNNER, hold=f"Dagster in-process run, {settings.partition}", started=started)
    session.begin(STEPS[-1].name)
    with session:
        records, failed = outcome(run_in_process(settings))
        for name, reason in failed.items():
            session.failed(name, reason)
        if failed:
            raise TaxipipeError(f"the Dagster run failed at {', '.join(failed)}")
        return session.finish(records)


def run_in_process(settings: Settings) -> ExecuteInProcessResult:
    """Run the job once on the partition of `settings` (the caller holds the home's run lock).

    Dagster's console logger shows its event lines (`dagster - DEBUG - ... STEP_START`) only
    under -v; by default only its warnings and errors. Its run storage keeps every event.
    """
    use_dagster_home(settings.home)
    resource = TaxipipeSettings(overrides=json.dumps(settings.model_dump(mode="json")))
    with DagsterInstance.get() as instance:
        return job_for(settings.data.color).execute_in_process(
            partition_key=f"{settings.partition.label}-01", resources={"taxipipe": resource},
            instance=instance, raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "DEBUG" if console.verbose() else "WARNING"}}}})


def outcome(result: ExecuteInProcessResult) -> tuple[dict[str, Record], dict[str, str]]:
    """The records of the ops that succeeded, by node name, and the failed ops' reasons."""
    done = {event.node_name for event in result.get_step_success_events()}
    failed = {event.node_name: event.step_failure_data.error.message.strip()
              for event in result.get_step_failure_events()}
    records: dict[str, Any] = {}
    for step in STEPS:
        if step.name in done and step.name not in failed:
            value = result.output_for_node(step.name)
            records[step.name] = list(value.values()) if step.per_month else value
    return by_node(records), failed
