"""One run per home: the home's run lock.

Guarantee: while a run holds its home, no other taxipipe process on that home runs steps or
deletes what the run uses; a second run waits, saying who holds the home, or stops at once
(`--no-wait`). The lock is a file lock (home/state/make.lock, its holder in make.owner), so
a killed holder releases it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from taxipipe import console
from taxipipe.errors import BusyError
from taxipipe.layout import Home
from taxipipe.safety.atomic import remove_stale_parts

#: The homes whose run lock this process holds (a nested `hold_home` there does not wait).
_HELD: set[Path] = set()


@contextmanager
def hold_home(home: Path, owner: str, wait: bool) -> Iterator[None]:
    """Hold the home's run lock; wait for another holder (saying so) or stop at once.

    `taxipipe run`, `make`, `make --clean`, every Prefect flow run, Dagster's in-process runs
    and every cleanup step hold it, so no cleanup deletes what one of those runs is using; an
    Airflow run holds it only in its cleanup task. It is held per process: inside a holder, a
    nested `hold_home` on the same home passes at once. Once held, the temporary files of
    killed writers are removed.
    """
    from filelock import FileLock, Timeout

    home = home.resolve()
    if home in _HELD:
        yield
        return
    names = Home(home)
    names.state.mkdir(parents=True, exist_ok=True)
    lock = FileLock(names.run_lock)
    owner_file = names.run_lock_owner
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
