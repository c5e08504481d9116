"""Atomic writes: no later run ever reads half a file under a real name.

Guarantee: a file this package writes appears whole under its name or not at all. It is
written under a temporary name beside it (`.NAME.PID-XXXX.part`) and renamed into place on
success; a crash leaves only the temporary file, which names its writer's process, and the
next run that holds the home (`home_lock.hold_home`) or scores predictions deletes the
leftovers of writers that are gone.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Files this package writes get the permissions of any new file (0666 less the umask).
FILE_MODE = 0o666 & ~_umask()
PART_MARK = ".part"
_WRITER = re.compile(rf"\.(\d+)-\w+{re.escape(PART_MARK)}")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only on success.

    The temporary name ends in `.part`, so no glob for the real files' suffix lists it. A crash or an exception leaves `target` as it was and removes the temporary file, so no
    later run ever sees half a file under the real name. The temporary name carries the
    writer's process id, so a later run can tell the leftovers of a killed process
    (`remove_stale_parts`) from files another process is still writing.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=PART_MARK, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            tmp.chmod(FILE_MODE)
        os.replace(tmp, target)
    except OSError as exc:
        _name_target(exc, tmp, target)
        raise
    finally:
        tmp.unlink(missing_ok=True)


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
    for folder in (home / "downloads", home / "partitions", home / "deployments", home / "predictions",
                   home / "state"):
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


def write_text_atomic(target: Path, text: str) -> None:
    """Write a small text file atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
