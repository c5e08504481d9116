"""The pipeline as a Prefect 3 flow: it walks the graph, calling one task per step.

The flow walks `taxipipe.pipeline.STEPS`: a per-month step (extract) is submitted once per
month, so the downloads run at once as futures; every other task (`tasks`) gets its
upstream steps' records. Cached task results persist in {home}/prefect/results, so a rerun
after a failed train starts at train. Run it with examples/prefect_pipeline.py, or deploy it
unchanged (prefect.yaml, or `serve`, see docs/prefect.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.states import Failed, State

from taxipipe.errors import StepFailed, TaxipipeError
from taxipipe.partition import scheduled_training_month
from taxipipe.pipeline import STEPS, Step, by_node, month_node
from taxipipe.runners.prefect.local import DEPLOYMENT_NAME, MONTHLY_CRON, FlowArguments, flow_settings
from taxipipe.runners.prefect.tasks import RUNNER, TASKS
from taxipipe.runners.session import Session, markdown_report, record_wall_time
from taxipipe.steps import Record, StepContext

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


class _Steps:
    """Calls the step tasks of one flow run and keeps their records and final states."""

    def __init__(self, session: Session, refresh: bool) -> None:
        self.session, self.settings, self.refresh = session, session.settings, refresh
        self.context = StepContext(self.settings, runner=RUNNER)
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
            failure = self.session.failed(name, str(error))
            if not isinstance(error, TaxipipeError):
                state.result()
            raise failure from error
        self.states[name] = state.name
        if state.name == "Cached":
            return self.session.up_to_date(name, state.result())
        return self.session.done(name, state.result())


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
        session = Session(settings, RUNNER, hold=f"Prefect flow run {flow_run.name}, {settings.partition}")
        session.begin("cleanup" if cleanup else "deploy")
        run = _Steps(session, refresh)
        with session:
            for step in STEPS:
                if cleanup or step.name != "cleanup":
                    run(step)
    except (StepFailed, TaxipipeError) as failure:
        return Failed(message=str(failure))
    partition = settings.partition
    records = by_node(run.records)
    create_markdown_artifact(key=f"ml-pipeline-{partition.color}-{partition.label}",
                             markdown=markdown_report(settings, records, run.states),
                             description="RMSE, row counts and step times of this run")
    return session.finish(records, wall_time=False)


def run_example(run: FlowArguments, refresh: bool, cleanup: bool, started: float) -> dict[str, Record]:
    """One flow run in this process; the wall time since `started` (before Prefect started its
    temporary server) recorded on the MLflow run of its train."""
    data = run.settings.data
    state = ml_pipeline(color=data.color, year=data.year, month=data.month, config=run.config,
                        overrides=run.overrides, refresh=refresh, cleanup=cleanup, return_state=True)
    if not state.is_completed():
        raise TaxipipeError(state.message or f"the flow run ended in state {state.name}")
    records = state.result()
    record_wall_time(run.settings, records, started)
    return records


def monthly_deployment(config: str | None = None,
                       overrides: dict[str, Any] | None = None) -> RunnerDeployment:
    """The flow served from this process (`--serve`), monthly, on the newest published month.

    `config` and `overrides` become the deployment's default parameters, so the served runs
    use the settings the process was started with (its --home, --url-template...).
    """
    from prefect.deployments.runner import EntrypointType

    parameters = {"latest": True, "config": config, "overrides": overrides or {}}
    return ml_pipeline.to_deployment(
        name=DEPLOYMENT_NAME, cron=MONTHLY_CRON, parameters=parameters, tags=["taxipipe"],
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="Retrain on the newest published month; move 'champion' if it is better.",
    )
