"""Atomic writes: no later run ever reads half a file under a real name.

Guarantee: a file this package writes appears whole under its name or not at all. It is
written under a temporary name beside it (`.NAME.PID-XXXX.part`) and renamed into place on
success; a crash leaves only the temporary file, which names its writer's process, and the
next run that holds the home (`home_lock.hold_home`) or scores predictions deletes the
leftovers of writers that are gone. A signal does not leave one: the temporary name is noted
before the file exists, and a command leaving on an interruption removes what is noted
(`unfinished_writes_removed`), wherever the signal landed.
"""

from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from taxipipe.layout import Home


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Files this package writes get the permissions of any new file (0666 less the umask).
FILE_MODE = 0o666 & ~_umask()
PART_MARK = ".part"
_WRITER = re.compile(rf"\.(\d+)-\w+{re.escape(PART_MARK)}")

#: The temporary files of this process's writes in progress, noted before they are created.
_UNFINISHED: set[Path] = set()


@contextmanager
def atomic_path(target: Path, mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` (with `mode`) only on success.

    The temporary name ends in `.part`, so no glob for the real files' suffix lists it. A crash or an exception leaves `target` as it was and removes the temporary file, so no
    later run ever sees half a file under the real name. The temporary name carries the
    writer's process id, so a later run can tell the leftovers of a killed process
    (`remove_stale_parts`) from files another process is still writing.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}-{os.urandom(4).hex()}{PART_MARK}"
    _UNFINISHED.add(tmp)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield tmp
        if tmp.exists():
            tmp.chmod(mode)
        os.replace(tmp, target)
    except OSError as exc:
        _name_target(exc, tmp, target)
        raise
    finally:
        tmp.unlink(missing_ok=True)
        _UNFINISHED.discard(tmp)


@contextmanager
def unfinished_writes_removed() -> Iterator[None]:
    """On the way out of the block, delete the temporary files of this process's unfinished
    writes: those a signal kept `atomic_path` from removing (it landed before its `try`, or
    inside its `finally`). The command line runs every command inside this block."""
    try:
        yield
    finally:
        for tmp in list(_UNFINISHED):
            tmp.unlink(missing_ok=True)
            _UNFINISHED.discard(tmp)


def _name_target(exc: OSError, tmp: Path, target: Path) -> None:
    """Make an error name `target` where it names the temporary file, or where a full disk
    stopped a write that named no file: the user knows the real name, not the temporary one."""
    if exc.filename is None and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        exc.filename = str(target)
    for slot in ("filename", "filename2"):
        if getattr(exc, slot) in (str(tmp), tmp):
            setattr(exc, slot, str(target))


def remove_stale_parts(home: Path) -> list[Path]:
    """Delete the temporary files of killed writers under the home; return what went."""
    removed = []
    for folder in Home(home).written_folders:
        for path in folder.rglob(f".*{PART_MARK}*") if folder.is_dir() else ():
            writer = _WRITER.search(path.name)
            if not process_alive(writer.group(1) if writer else ""):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def process_alive(pid: str) -> bool:
    """Whether `pid` names a running process (False for names without one)."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_started(pid: str) -> str | None:
    """When process `pid` started (clock ticks after boot, from /proc/PID/stat); None where unknown.

    A pid and its start name one process: a pid the system later reuses has another start.
    """
    if not pid.isdigit():
        return None
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def write_text_atomic(target: Path, text: str) -> None:
    """Write a small text file atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_private(target: Path, data: str | bytes) -> None:
    """Write a small file atomically, readable by this user only (mode 0600): a secret."""
    with atomic_path(target, 0o600) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
