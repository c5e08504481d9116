"""A run's life, the same under every engine: the home held, the header, the tracking store
checked and warmed up, each node's line, the wall time and the closing summary.

In the spirit of Kedro's hooks, a runner opens a `Session` around its run, calls `begin`
where the run starts (the header), reports each node before it runs, after it ran or was up
to date, and when it failed (`started`, `done`, `up_to_date`, `failed`; `run` does all of it
around `pipeline.run_step`), and ends with `finish`: the wall time, then the summary. The
rules for a runner (docs/runners.md) are kept here, so every engine keeps them alike:

- a run whose steps run in this process holds the home's run lock from before its first step
  to after its last (`hold`);
- the header names the runner and the target; a user-facing error is one line and
  `StepFailed`, never a traceback;
- an unreachable tracking server fails the run before its first step;
- the wall time counts from `started` (taken before the engine starts) and is recorded on the
  MLflow run of train only when this run trained.

Tasks that run in a process or context of their own (Airflow's, Dagster's) print their line
with `run_task` as they end.
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from typing import Any, Callable, Mapping, Sequence

from taxipipe import console, tracking, walltime
from taxipipe.config import Settings
from taxipipe.errors import StepFailed, TaxipipeError
from taxipipe.pipeline import Step, run_step
from taxipipe.safety.home_lock import hold_home
from taxipipe.safety.interrupts import INTERRUPTIONS
from taxipipe.steps import Record, StepContext, Upstream


class Session:
    """One run of the pipeline, as this process sees it.

    `hold` names the run for the home's run lock (None: the run's steps run elsewhere, or the
    caller holds it); `wait` waits for another holder instead of failing at once. `started`
    defaults to the time the lock was taken; `warm_up` opens the MLflow store in the
    background while the data steps run.
    """

    def __init__(self, settings: Settings, runner: str, *, hold: str | None = None, wait: bool = True,
                 started: float | None = None, warm_up: bool = False) -> None:
        self.settings, self.runner = settings, runner
        self.started = started
        self.records: dict[str, Record] = {}
        self.ran: list[str] = []
        self._hold, self._wait, self._warm_up = hold, wait, warm_up
        self._exit = ExitStack()

    def __enter__(self) -> Session:
        if self._hold is not None:
            self._exit.enter_context(hold_home(self.settings.home, self._hold, self._wait))
        if self.started is None:
            self.started = time.time()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        try:
            if self._warm_up and not (kind is not None and issubclass(kind, INTERRUPTIONS)):
                tracking.finish_warm_up()  # an interrupted run leaves at once: see finish_warm_up
        finally:
            self._exit.close()

    def begin(self, target: str | None, force: bool | None = None) -> None:
        """The header; probe the tracking server; start the store's warm-up if asked."""
        header(self.runner, self.settings, target, force)
        tracking.check_reachable(self.settings)
        if self._warm_up:
            tracking.warm_up(self.settings, self.runner)

    def started_node(self, name: str, reasons: Sequence[str] = ()) -> None:
        """Before a node runs: its line, and why it runs when the runner decided that."""
        console.task_started(name)
        if reasons:
            console.say(f"   ↳ because {'; '.join(reasons)}")

    def done(self, name: str, record: Record) -> Record:
        """After a node ran in this run: keep its record, print its line."""
        self.records[name] = record
        self.ran.append(name)
        console.task_done(name, record["seconds"], record.get("summary"))
        return record

    def up_to_date(self, name: str, record: Record) -> Record:
        """A node the runner did not run: its record from an earlier run."""
        self.records[name] = record
        console.task_up_to_date(name)
        return record

    def failed(self, name: str, reason: str) -> StepFailed:
        """On a node's user-facing error: its line; the StepFailed for the runner to raise."""
        console.task_failed(name, reason)
        return StepFailed(name, reason)

    def run(self, node: Step, ctx: StepContext, announce: bool = True) -> Record:
        """Run `node` on the records of its upstream nodes in this session; its lines around it."""
        if announce:
            self.started_node(node.name)
        upstream = {name: self.records[name] for name in node.upstream}
        try:
            record = run_step(node, ctx, upstream)
        except TaxipipeError as exc:
            raise self.failed(node.name, str(exc)) from exc
        return self.done(node.name, record)

    def finish(self, records: Mapping[str, Any] | None = None, wall_time: bool = True) -> dict[str, Any]:
        """The end of a run that succeeded: the wall time (unless the caller records it, as the
        Prefect example does from before its server started), then the summary."""
        records = dict(self.records if records is None else records)
        if wall_time:
            record_wall_time(self.settings, records, self.started or time.time())
        final_summary(records)
        return records


def run_task(node: Step, ctx: StepContext, upstream: Upstream) -> Record:
    """Run one node in an engine's task and print its line as it ends, from the process that
    ran it, so the lines keep their order with what the step printed meanwhile."""
    record = run_step(node, ctx, upstream)
    console.task_done(node.name, record["seconds"], record.get("summary"))
    return record


def record_wall_time(settings: Settings, records: Mapping[str, Any], started: float) -> float | None:
    """`walltime.record`, when this run trained (train's record is newer than `started`):
    a run that reused train touches no MLflow store."""
    trained = records.get("train") or {}
    if trained.get("finished_at", 0.0) < started:
        return None
    return walltime.record(settings, records, started)


def example(run: Callable[[argparse.Namespace, float], object], parser: argparse.ArgumentParser,
            argv: Sequence[str] | None = None) -> int:
    """The main of an example: the clock started first, the arguments, the output levels, then
    `run(args, started)`; a failed step or a `TaxipipeError` is one line and exit status 1."""
    started = time.time()
    console.keep_order()
    args = parser.parse_args(argv)
    if "verbosity" in args:
        console.configure(args.verbosity)
    try:
        run(args, started)
    except StepFailed:
        return 1
    except TaxipipeError as exc:
        console.pipeline_failed(str(exc))
        return 1
    return 0


def header(runner: str, settings: Settings, target: str | None = None, force: bool | None = None,
           dry_run: bool = False) -> None:
    """Title, target (the last step the run reaches; every runner names it) and the data months
    the run will use."""
    from taxipipe.window import window_label

    partition = settings.partition
    console.say(f"🔍 Dry run ({runner} runner): nothing is executed" if dry_run
                else f"🚀 Starting ML Pipeline ({runner} runner)")
    if target is not None:
        console.say(f"🎯 Target: {target}")
    console.say(f"📅 Data: {partition.color} {window_label(settings.training_months)} "
                f"(validation {settings.validation_month.label})")
    if force is not None:
        console.say(f"🔨 Force: {force}")
    console.say("=" * 60)


def final_summary(records: Mapping[str, Mapping]) -> None:
    """The closing lines: RMSE and MLflow run id (and the deployment verdict if any)."""
    console.say("=" * 60)
    console.say("🎉 Pipeline completed successfully!")
    trained = records.get("train")
    if trained:
        console.say(f"📊 Final model RMSE: {trained['rmse']:.4f}")
        console.say(f"🆔 Model run ID: {trained['run_id']}")
    deployed = records.get("deploy")
    if deployed:
        console.say(f"🏷️  {deployed['summary']}")
    from taxipipe.peak_memory import describe, peak_rss_bytes

    console.say(f"📈 Peak memory: {describe(peak_rss_bytes())} (this process)")


def final_record(records: Mapping[str, Mapping]) -> dict[str, Any]:
    """What a finished run produced, for machines (`taxipipe run --json`)."""
    from taxipipe.peak_memory import peak_rss_bytes

    trained, deployed = records.get("train", {}), records.get("deploy", {})
    last = records[next(reversed(records))] if records else {}
    return {"partition": deployed.get("partition"), "rmse": trained.get("rmse"),
            "run_id": trained.get("run_id"), "best_iteration": trained.get("best_iteration"),
            "model_name": deployed.get("model_name"), "version": deployed.get("version"),
            "champion": deployed.get("champion"), "reason": deployed.get("reason"),
            "window": trained.get("window"), "compute": trained.get("compute"),
            "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1), "step_seconds": last.get("timings", {})}


def markdown_report(settings: Settings, records: Mapping[str, Mapping], states: Mapping[str, str]) -> str:
    """A run's report in markdown: RMSE, row counts, and each step's state and time."""
    from taxipipe.window import window_label

    partition = settings.partition
    lines = [f"# ml-pipeline: {partition.color} {window_label(settings.training_months)} "
             f"(validation {settings.validation_month.label})", ""]
    trained = records.get("train")
    if trained:
        lines += [f"**RMSE:** {trained['rmse']:.4f} (MLflow run `{trained['run_id']}`)", ""]
    if "deploy" in records:
        lines += [f"**Deployment:** {records['deploy']['summary']}", ""]
    transformed = records.get("transform")
    if transformed:
        lines += ["| month | rows read | rides kept |", "|---|---:|---:|"]
        lines += [f"| {role} | {transformed[role]['rows_in']:,} | {transformed[role]['rows']:,} |"
                  for role in ("train", "validation")]
        lines.append("")
    lines += ["| step | state | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {states.get(name, 'Completed')} | {record['seconds']:.2f} |"
              for name, record in records.items()]
    lines += ["", "Cached steps show the time they took when they ran."]
    return "\n".join(lines) + "\n"
