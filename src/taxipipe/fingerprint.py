"""The one rule for "stale": what a step's output depends on, as a fingerprint.

A step's output is a function of the values of the config keys it declares, the content of
the files it reads, its code (the step function, the helpers of its module it calls and the
taxipipe modules it imports, see `hashing.code_fingerprint`) and its upstream steps' records.
The make runner compares the parts to say why a step reruns; the Prefect cache key is the
digest of the whole. So an edit of features.py reruns the steps that use it under both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from taxipipe.config import Settings, flatten, get_value
from taxipipe.hashing import FileHasher, FileState, code_fingerprint, value_fingerprint
from taxipipe.pipeline import BY_NAME, Step, by_node
from taxipipe.steps import VOLATILE_FIELDS, StepContext


@dataclass(frozen=True)
class Fingerprint:
    """The parts of a step's fingerprint; `digest` hashes them all."""

    step: str
    config: dict[str, Any]
    inputs: dict[str, FileState | None]
    code: str
    upstream: dict[str, Any]

    def digest(self) -> str:
        inputs = {key: state.sha256 if state else None for key, state in self.inputs.items()}
        return value_fingerprint({"step": self.step, "config": self.config, "inputs": inputs,
                                  "code": self.code, "upstream": self.upstream})


def fingerprint(step: Step, settings: Settings, upstream: Mapping[str, Any],
                hasher: FileHasher | None = None) -> Fingerprint:
    """The fingerprint of `step` (a graph node) for `settings` and its upstream records.

    Input files are keyed by their path relative to the home; `hasher` may trust hashes it
    already knows while a file's size and mtime are unchanged (the make runner's lock file).
    """
    hasher = hasher or FileHasher({})
    ctx = StepContext(settings, month=step.month)
    inputs = {}
    for path in step.reads(ctx):
        key = home_key(settings.home, path)
        inputs[key] = hasher.state(key, path)
    return Fingerprint(step.name, config_values(step, settings), inputs, code_fingerprint(step.run),
                       essential(dict(upstream), f"{settings.home}{os.sep}"))


def cache_key(step_name: str, settings: Settings, upstream: Mapping[str, Any]) -> str:
    """The Prefect cache key of step `step_name`: its fingerprint's digest (upstream: records
    by step, per-month ones as lists)."""
    return fingerprint(BY_NAME[step_name], settings, by_node(upstream)).digest()


def config_values(step: Step, settings: Settings) -> dict[str, Any]:
    """The values of the config keys `step` declares, sections flattened to dotted keys."""
    values: dict[str, Any] = {}
    for key in step.config_keys:
        value = get_value(settings, key)
        if hasattr(value, "model_dump"):
            values.update(flatten(value.model_dump(mode="json"), key + "."))
        else:
            values[key] = value
    return values


def home_key(home: Path, path: Path) -> str:
    """`path` relative to the home, as lock files and fingerprints name files."""
    return path.relative_to(home).as_posix()


def essential(value: Any, home: str) -> Any:
    """A record without its circumstantial fields and with home-relative paths: what
    identifies a step's output wherever the home directory lives."""
    if isinstance(value, Mapping):
        return {key: essential(item, home) for key, item in value.items() if key not in VOLATILE_FIELDS}
    if isinstance(value, (list, tuple)):
        return [essential(item, home) for item in value]
    if isinstance(value, str) and value.startswith(home):
        return value[len(home):]
    return value
