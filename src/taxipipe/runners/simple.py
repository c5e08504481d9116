"""The simple runner: every node of the graph in order, in this process."""

from __future__ import annotations

import time
from typing import Sequence

from taxipipe import console, tracking, walltime
from taxipipe.config import Settings
from taxipipe.errors import StepFailed, TaxipipeError
from taxipipe.pipeline import Step, graph, run_step
from taxipipe.safety.interrupts import INTERRUPTIONS
from taxipipe.steps import Record, StepContext


class SimplePipeline:
    """Runs the steps one after another, as the seed's simple_pipeline.py did.

    `steps` (default: all) picks steps of the graph; a per-month step runs for every month.
    """

    def __init__(self, settings: Settings, runner: str = "simple", steps: Sequence[Step] | None = None):
        self.context = StepContext(settings, runner=runner)
        chosen = None if steps is None else {step.step_name for step in steps}
        self.steps = tuple(node for node in graph(settings) if chosen is None or node.step_name in chosen)
        self.records: dict[str, Record] = {}

    def run(self) -> dict[str, Record]:
        """Run every node; raise StepFailed on the first user-facing error. Records the wall time."""
        started = time.time()
        console.header(self.context.runner, self.context.settings, target=self.steps[-1].step_name if self.steps else None)
        tracking.check_reachable(self.context.settings)
        tracking.warm_up(self.context.settings, self.context.runner)
        try:
            for step in self.steps:
                self.run_task(step)
        except INTERRUPTIONS:
            raise  # leave now: the warm-up may wait for Python's import lock, which the signal can leave held
        except BaseException:
            tracking.finish_warm_up()
            raise
        tracking.finish_warm_up()
        walltime.record(self.context.settings, self.records, started)
        console.final_summary(self.records)
        return self.records

    def run_task(self, step: Step) -> Record:
        console.task_started(step.name)
        upstream = {name: self.records[name] for name in step.upstream}
        try:
            record = run_step(step, self.context, upstream)
        except TaxipipeError as exc:
            console.task_failed(step.name, str(exc))
            raise StepFailed(step.name, str(exc)) from exc
        self.records[step.name] = record
        console.task_done(step.name, record["seconds"], record.get("summary"))
        return record
