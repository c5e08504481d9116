"""The simple runner: every step in order, in this process."""

from __future__ import annotations

from taxipipe import console, tracking
from taxipipe.config import Settings
from taxipipe.errors import TaxipipeError
from taxipipe.pipeline import STEPS, Step, run_step
from taxipipe.steps import Record, StepContext


class StepFailed(Exception):
    """A step raised; carries the step's name and the user-facing reason."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"task '{step}' failed: {reason}")
        self.step = step
        self.reason = reason


class SimplePipeline:
    """Runs the nine steps one after another, as the seed's simple_pipeline.py did."""

    def __init__(self, settings: Settings, runner: str = "simple", steps: tuple[Step, ...] = STEPS):
        self.context = StepContext(settings, runner=runner)
        self.steps = steps
        self.records: dict[str, Record] = {}

    def run(self) -> dict[str, Record]:
        """Run every step; raise StepFailed on the first user-facing error."""
        console.header(self.context.runner, self.context.settings)
        tracking.check_reachable(self.context.settings)
        tracking.warm_up(self.context.settings, self.context.runner)
        for step in self.steps:
            self.run_task(step)
        console.final_summary(self.records)
        return self.records

    def run_task(self, step: Step) -> Record:
        console.task_started(step.name)
        try:
            record = run_step(step, self.context, self.records)
        except TaxipipeError as exc:
            console.task_failed(step.name, str(exc))
            raise StepFailed(step.name, str(exc)) from exc
        self.records[step.name] = record
        console.task_done(step.name, record["seconds"], record.get("summary"))
        return record
