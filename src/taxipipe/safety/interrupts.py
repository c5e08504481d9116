"""Ctrl-C and SIGTERM: where they may interrupt, and where they must wait.

A signal handler that raises inside a native callback (XGBoost calls back into Python while
it builds its matrices) leaves the library in a broken state and the process aborts. Code
that runs such libraries holds `deferred()`: a signal that arrives is noted and acted on as
soon as the block ends. A signal that arrives while an earlier one's exception unwinds the
stack is noted, not raised: raised inside a `finally`, it would cut that cleanup short.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


#: The signals the command line's handlers have seen. Python ignores an exception raised in a
#: weakref callback or a `__del__`, and a handler can run inside one (an import's module lock
#: is released through a weakref callback), so `raise_if_signalled` raises it again later.
_SEEN: list[int] = []

#: Whether a signal's exception is unwinding the stack (so a further signal only gets noted).
_unwinding = False


class Terminated(BaseException):
    """SIGTERM arrived; like KeyboardInterrupt, it unwinds the stack so temporary files go."""


#: What Ctrl-C and SIGTERM raise.
INTERRUPTIONS = (KeyboardInterrupt, Terminated)


def install() -> None:
    """Make Ctrl-C and SIGTERM raise (the command line's handlers), with no signal seen yet."""
    global _unwinding
    _SEEN.clear()
    _unwinding = False
    signal.signal(signal.SIGTERM, raise_terminated)
    signal.signal(signal.SIGINT, raise_interrupted)
    sys.unraisablehook = ignore_swallowed_signals


def raise_terminated(signum: int, frame: Any) -> None:
    """The SIGTERM handler of the command line."""
    _interrupt(signum, Terminated)


def raise_interrupted(signum: int, frame: Any) -> None:
    """The SIGINT handler of the command line: Python's own, remembered."""
    _interrupt(signum, KeyboardInterrupt)


def _interrupt(signum: int, exception: type[BaseException]) -> None:
    """Note the signal; raise its exception unless an earlier one is unwinding the stack."""
    global _unwinding
    _SEEN.append(signum)
    if not _unwinding:
        _unwinding = True
        raise exception()


def ignore_swallowed_signals(unraisable: sys.UnraisableHookArgs) -> None:
    """`sys.unraisablehook` of the command line: a signal's exception that Python had to ignore
    (a weakref callback's, an import's among them) is not printed as a traceback, since
    `raise_if_signalled` raises it again (and the next signal raises at once); anything else is
    reported as Python does."""
    global _unwinding
    if isinstance(unraisable.exc_value, INTERRUPTIONS):
        _unwinding = False
    else:
        sys.__unraisablehook__(unraisable)


def raise_if_signalled() -> None:
    """Raise the exception of a signal that arrived, in case Python swallowed it.

    Long work calls this between steps and between the chunks of a download.
    """
    global _unwinding
    for signum, exception in ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)):
        if signum in _SEEN:
            _unwinding = True
            raise exception()


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then act on them as before.

    Outside the main thread (signals are delivered there only) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: arrived.append(signum)) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for signum in dict.fromkeys(arrived):
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), signum)
