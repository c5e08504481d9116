"""The Dask scheduler's roster: the name of every worker that ever joined it, kept in a file of
the stack's home, so `stack status` lists a worker that left as gone (the scheduler forgets it).

The stack starts its scheduler with `--preload taxipipe.stack.dask_roster_preload`, which adds
each joining worker's name here.
"""

from __future__ import annotations

import json
from pathlib import Path

from taxipipe.safety.atomic import write_text_atomic

#: The environment variable that names the roster's file for the scheduler's preload.
ROSTER_ENV = "TAXIPIPE_DASK_ROSTER"
#: The module the scheduler preloads.
PRELOAD = "taxipipe.stack.dask_roster_preload"


def read(path: Path) -> list[str]:
    """The names of every worker that joined, or none when no roster was written yet."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return []


def add(path: Path, name: str) -> None:
    """Put `name` on the roster (written atomically) unless it is there."""
    names = read(path)
    if name not in names:
        write_text_atomic(path, json.dumps(sorted([*names, name])))
