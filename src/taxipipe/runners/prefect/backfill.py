"""Backfill several months at once: a Prefect flow whose tasks run on Dask workers.

Each month is one task that runs the nine steps (the same `run_step` calls as every runner);
prefect-dask's `DaskTaskRunner` sends the tasks to a Dask cluster, so months train in
parallel, one per worker: a LocalCluster started for the flow run, or the scheduler at
`--scheduler tcp://HOST:PORT`. The months share the download cache, the MLflow store and the
registry, so the workers need the same home (one machine, or shared storage). The tasks
report to the Prefect API of PREFECT_API_URL; without one, `shared_api` starts a temporary
server that the flow and every worker share.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from taxipipe import console, tracking
from taxipipe.config import Settings
from taxipipe.errors import TaxipipeError
from taxipipe.pipeline import graph, run_step
from taxipipe.runners.prefect.local import FlowArguments, flow_settings
from taxipipe.runners.prefect.tasks import RUNNER
from taxipipe.steps import Record, StepContext
from taxipipe.window import window_key


@task(name="train-month", task_run_name="train-month[{month}]", cache_policy=NO_CACHE)
def train_month(settings: Settings, month: str) -> Record:
    """The nine steps of one month, in the Dask worker that picked the task."""
    context = StepContext(settings, runner=RUNNER, tags={"prefect_task_runner": "dask"})
    records: dict[str, Record] = {}
    for step in graph(settings):
        records[step.name] = run_step(step, context, {name: records[name] for name in step.upstream})
    return {"month": month, "window": window_key(settings.training_months), "rmse": records["train"]["rmse"],
            "run_id": records["train"]["run_id"], "champion": records["deploy"]["champion"],
            "process": os.getpid()}


@flow(name="ml-pipeline-backfill", description="Train several months at once, one task per month.")
def backfill(months: list[str], config: str | None = None,
             overrides: dict[str, Any] | None = None) -> list[Record]:
    """Train on each of `months` (YYYY-MM; each validates on the month after it)."""
    runs = []
    for month in months:
        year, number = (int(part) for part in month.split("-"))
        runs.append((month, flow_settings(None, year, number, config, overrides)))
    first = runs[0][1]
    tracking.experiment_id(first, tracking.client(first), RUNNER)
    futures = [train_month.submit(settings, month) for month, settings in runs]
    return [future.result() for future in futures]


def run_example(run: FlowArguments, months: list[str], workers: int) -> list[Record]:
    """Backfill `months` on the Dask scheduler of the settings (or a LocalCluster of `workers`)
    through the shared Prefect API; print one line per month."""
    runner = dask_task_runner(run.settings.compute.dask_scheduler, workers)
    run.overrides.get("compute", {}).pop("dask_scheduler", None)
    with shared_api():
        state = backfill.with_options(task_runner=runner)(
            months=months, config=run.config, overrides=run.overrides, return_state=True)
    if not state.is_completed():
        raise TaxipipeError(state.message or f"the backfill ended in state {state.name}")
    trained = state.result()
    for month in trained:
        champion = " 🏆" if month["champion"] else ""
        console.say(f"📊 {month['window']}: RMSE {month['rmse']:.4f} (MLflow run {month['run_id']}){champion}")
    return trained


@contextmanager
def shared_api() -> Iterator[None]:
    """PREFECT_API_URL, or a temporary Prefect server for the block, exported to the workers.

    Without it every Dask worker would start a temporary server of its own.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer()
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield
    finally:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        del os.environ["PREFECT_API_URL"]
        server.stop()


def dask_task_runner(scheduler: str = "", workers: int = 2) -> DaskTaskRunner:
    """The scheduler at `scheduler`, or a LocalCluster of `workers` single-threaded workers."""
    if scheduler:
        return DaskTaskRunner(address=scheduler)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                          "dashboard_address": ":0"})
