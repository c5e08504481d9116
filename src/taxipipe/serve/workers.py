"""The worker processes of one `taxipipe serve --workers N`: a reload asked of one reaches all.

uvicorn hands each request to whichever worker accepted the connection, so `POST
/admin/reload` lands on one of them. The workers share a directory (made by `serve`): the
worker that is asked raises the reload generation in it, every worker polls that number and
refreshes when it rises, and each writes what it serves to its own file, which the asked
worker reads back to answer for all of them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from taxipipe.safety.atomic import process_alive, write_text_atomic

GENERATION = "reload-generation"
POLL_SECONDS = 0.25


class Workers:
    """One worker's view of the shared directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self.seen = self.generation()

    def generation(self) -> int:
        try:
            return int((self.directory / GENERATION).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def ask_all(self) -> int:
        """Raise the generation (under a lock, as two workers may be asked at once); the new number."""
        import fcntl

        with open(self.directory / f"{GENERATION}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            generation = self.generation() + 1
            write_text_atomic(self.directory / GENERATION, str(generation))
        return generation

    def report(self, generation: int, state: dict[str, Any]) -> None:
        """Say what this worker serves after handling `generation`."""
        self.seen = max(self.seen, generation)
        write_text_atomic(self._file(self.pid), json.dumps({"pid": self.pid, "generation": self.seen, **state}))

    def leave(self) -> None:
        self._file(self.pid).unlink(missing_ok=True)

    def states(self) -> list[dict[str, Any]]:
        """What every live worker last reported, by pid."""
        found = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if process_alive(str(state["pid"])):
                found.append(state)
        return found

    def wait_for(self, generation: int, seconds: float) -> list[dict[str, Any]]:
        """Every live worker's state once all have handled `generation` (or when `seconds` ran out)."""
        deadline = time.monotonic() + seconds
        while True:
            states = self.states()
            if all(state["generation"] >= generation for state in states) or time.monotonic() > deadline:
                return states
            time.sleep(POLL_SECONDS / 2)

    def _file(self, pid: int) -> Path:
        return self.directory / f"worker-{pid}.json"


def supervisor(config: Any, sockets: list[Any]) -> Any:
    """uvicorn's supervisor of the workers, which also drops the live metrics of a worker that died.

    uvicorn replaces a worker that was killed (or crashed); its files in
    PROMETHEUS_MULTIPROC_DIR would keep its per-worker series on /metrics for ever, so they are
    marked dead as it is replaced.
    """
    from prometheus_client import multiprocess
    from uvicorn.supervisors.multiprocess import Multiprocess

    class Supervisor(Multiprocess):
        def keep_subprocess_alive(self) -> None:
            before = {process.pid for process in self.processes}
            super().keep_subprocess_alive()
            for pid in before - {process.pid for process in self.processes}:
                multiprocess.mark_process_dead(pid)

    return Supervisor(config, sockets=sockets)
