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

from taxipipe import console
from taxipipe.config import Settings
from taxipipe.errors import StepFailed, TaxipipeError
from taxipipe.safety.home_lock import hold_home
from taxipipe.partition import scheduled_training_month
from taxipipe.pipeline import STEPS, Step, by_node, month_node
from taxipipe.runners.prefect.local import DEPLOYMENT_NAME, MONTHLY_CRON, flow_settings
from taxipipe.runners.prefect.tasks import RUNNER, TASKS
from taxipipe.steps import Record, StepContext

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


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
        with hold_home(settings.home, f"Prefect flow run {flow_run.name}, {settings.partition}", wait=True):
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
