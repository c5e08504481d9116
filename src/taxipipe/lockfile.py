"""The make runner's memory (one human-readable lock file per partition) and the home's run lock.

    home/state/{color}/{YYYY-MM}.lock.json   what each step's last successful run saw and made
    home/state/make.lock, make.owner         the home's run lock (filelock) and who holds it

Paths inside a lock file are relative to the home directory.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from taxipipe import console
from taxipipe.errors import BusyError, PipelineStateError
from taxipipe.hashing import FileState
from taxipipe.layout import remove_stale_parts, write_text_atomic
from taxipipe.partition import Partition

LOCK_VERSION = 1
#: The homes whose run lock this process holds (a nested `hold_home` there does not wait).
_HELD: set[Path] = set()


def lock_path(home: Path, partition: Partition, train_months: int = 1) -> Path:
    """The lock file of the window of `train_months` months ending at `partition`."""
    from taxipipe.window import training_window, window_label

    return home / "state" / partition.color / f"{window_label(training_window(partition, train_months))}.lock.json"


def _states(data: Mapping[str, Any]) -> dict[str, FileState]:
    return {key: FileState.from_json(value) for key, value in data.items()}


def _states_json(states: Mapping[str, FileState]) -> dict[str, Any]:
    return {key: state.as_json() for key, state in states.items()}


@dataclass
class Entry:
    """What one step's last successful run depended on and produced."""

    finished_at: str
    code: str
    config: dict[str, Any]
    inputs: dict[str, FileState]
    outputs: dict[str, FileState]
    upstream: dict[str, str]
    fingerprint: str
    record: dict[str, Any]
    removed_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = {**vars(self), "inputs": _states_json(self.inputs), "outputs": _states_json(self.outputs)}
        if self.removed_by is None:
            del data["removed_by"]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        return cls(**{**data, "inputs": _states(data["inputs"]), "outputs": _states(data["outputs"])})


@dataclass
class LockFile:
    """The state of one partition: an entry per finished step, and the steps under way."""

    path: Path
    partition: str
    steps: dict[str, Entry] = field(default_factory=dict)
    running: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, partition: Partition) -> LockFile:
        """The recorded state; an empty one when there is none or another version wrote it."""
        try:
            data = json.loads(path.read_text())
            if data.get("version") != LOCK_VERSION:
                return cls(path, partition.key)
            steps = {name: Entry.from_json(entry) for name, entry in data["steps"].items()}
            return cls(path, partition.key, steps, dict(data["running"]))
        except FileNotFoundError:
            return cls(path, partition.key)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise PipelineStateError(
                f"the state file {path} is unreadable; remove it (or run `taxipipe make --clean`) "
                "and the next run rebuilds the partition"
            ) from None

    def save(self) -> None:
        data = {"version": LOCK_VERSION, "partition": self.partition,
                "steps": {name: entry.as_json() for name, entry in self.steps.items()},
                "running": self.running}
        write_text_atomic(self.path, json.dumps(data, indent=2) + "\n")

    def known_files(self) -> dict[str, FileState]:
        """Every file state recorded by any step, by home-relative path."""
        known: dict[str, FileState] = {}
        for entry in self.steps.values():
            known.update(entry.inputs)
            known.update(entry.outputs)
        return known

    def refresh(self, states: Mapping[str, FileState]) -> bool:
        """Adopt the new size/mtime of files re-hashed to the same content; True if any changed."""
        changed = False
        for entry in self.steps.values():
            for recorded in (entry.inputs, entry.outputs):
                for key, state in states.items():
                    if key in recorded and recorded[key].sha256 == state.sha256 and recorded[key] != state:
                        recorded[key] = state
                        changed = True
        return changed


@contextmanager
def hold_home(home: Path, owner: str, wait: bool) -> Iterator[None]:
    """Hold the home's run lock; wait for another holder (saying so) or stop at once.

    `taxipipe run`, `make`, `make --clean`, the in-process Prefect, Dagster and Airflow runs
    and every cleanup step hold it, so no cleanup deletes what one of those runs is using. It
    is held per process: inside a holder, a nested `hold_home` on the same home passes at
    once. Once held, the temporary files of killed writers are removed.
    """
    from filelock import FileLock, Timeout

    home = home.resolve()
    if home in _HELD:
        yield
        return
    state = home / "state"
    state.mkdir(parents=True, exist_ok=True)
    lock = FileLock(state / "make.lock")
    owner_file = state / "make.owner"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = owner_file.read_text().strip() if owner_file.exists() else "unknown"
        if not wait:
            raise BusyError(
                f"another taxipipe run ({holder}) is using {home}; wait for it to finish "
                "or run again without --no-wait"
            ) from None
        console.say(f"⏳ Waiting for another taxipipe run ({holder}) on {home} to finish")
        lock.acquire()
    _HELD.add(home)
    try:
        owner_file.write_text(f"pid {os.getpid()}, {owner}\n")
        remove_stale_parts(home)
        yield
    finally:
        _HELD.discard(home)
        lock.release()
