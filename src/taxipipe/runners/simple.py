"""The simple runner: every node of the graph in order, in this process."""

from __future__ import annotations

from typing import Sequence

from taxipipe.config import Settings
from taxipipe.pipeline import Step, graph
from taxipipe.runners.session import Session
from taxipipe.steps import Record, StepContext


class SimplePipeline:
    """Runs the steps one after another, as the seed's simple_pipeline.py did.

    `steps` (default: all) picks steps of the graph; a per-month step runs for every month.
    `hold` names the run for the home's run lock, which it holds from its first step to its last.
    """

    def __init__(self, settings: Settings, runner: str = "simple", steps: Sequence[Step] | None = None,
                 hold: str | None = None):
        self.context = StepContext(settings, runner=runner)
        chosen = None if steps is None else {step.step_name for step in steps}
        self.steps = tuple(node for node in graph(settings) if chosen is None or node.step_name in chosen)
        self.hold = hold or f"{runner} runner, {settings.partition}"

    def run(self) -> dict[str, Record]:
        """Run every node; raise StepFailed on the first user-facing error. Records the wall time."""
        with Session(self.context.settings, self.context.runner, hold=self.hold, warm_up=True) as session:
            session.begin(self.steps[-1].step_name if self.steps else None)
            for step in self.steps:
                session.run(step, self.context)
            return session.finish()
