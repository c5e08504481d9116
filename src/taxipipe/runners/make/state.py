"""The make runner's memory: one human-readable state file per partition, as dvc.lock is.

    home/state/{color}/{YYYY-MM}.lock.json   what each step's last successful run saw and made

Guarantee: a step is recorded only after it succeeded, and the file is replaced atomically,
so a killed build leaves the state of its last finished step; a step that was running is
listed under `running` and reruns ("it was interrupted"). Paths inside are relative to the home.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from taxipipe.errors import PipelineStateError
from taxipipe.hashing import FileState
from taxipipe.partition import Partition
from taxipipe.safety.atomic import write_text_atomic

LOCK_VERSION = 1


def lock_path(home: Path, partition: Partition, train_months: int = 1) -> Path:
    """The lock file of the window of `train_months` months ending at `partition`."""
    from taxipipe.layout import Layout

    return Layout(home, partition, train_months).make_state


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
class MakeState:
    """The state of one partition: an entry per finished step, and the steps under way."""

    path: Path
    partition: str
    steps: dict[str, Entry] = field(default_factory=dict)
    running: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, partition: Partition) -> MakeState:
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
