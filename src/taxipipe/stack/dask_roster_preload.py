"""The stack's Dask scheduler preload: every joining worker's name goes on the roster
(`stack.dask_roster`) named by TAXIPIPE_DASK_ROSTER."""

from __future__ import annotations

import os
from pathlib import Path

from distributed.diagnostics.plugin import SchedulerPlugin

from taxipipe.stack import dask_roster


class Roster(SchedulerPlugin):
    """Adds each joining worker's name to the roster file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add_worker(self, scheduler: object, worker: str) -> None:
        dask_roster.add(self.path, str(scheduler.workers[worker].name))  # type: ignore[attr-defined]


def dask_setup(scheduler: object) -> None:
    """The preload's hook: keep the roster in the file TAXIPIPE_DASK_ROSTER names."""
    scheduler.add_plugin(Roster(Path(os.environ[dask_roster.ROSTER_ENV])))  # type: ignore[attr-defined]
