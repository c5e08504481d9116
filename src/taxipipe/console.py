"""The seed's console lines, shared by every runner so they all read alike (a run's header
and summary: `runners.session`).

The run's lines go to stdout unless the `taxipipe` logger is set above INFO (`-q`);
`configure` sets the levels the command line's -v/-q ask for, for taxipipe and its libraries.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TextIO

LOGGER = logging.getLogger("taxipipe")
#: Where the run's lines go; None: stdout at the time of writing.
_human_stream: TextIO | None = None


def configure(verbosity: int = 0, human_to_stderr: bool = False) -> None:
    """Levels for -q (-1: errors only), the default (0) and -v (1: library messages too).

    By default MLflow's informational lines and Python warnings of the libraries stay
    hidden (ignored, so that libraries which route warnings to their own loggers, as Airflow
    does, print none either); `-v` shows them, and taxipipe's own debug lines (training metrics).
    """
    global _human_stream
    keep_order()
    _human_stream = sys.stderr if human_to_stderr else None
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.handlers = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    library_level = "INFO" if verbosity > 0 else "ERROR"
    os.environ["MLFLOW_LOGGING_LEVEL"] = library_level
    logging.getLogger("mlflow").setLevel(library_level)
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.handlers = [handler]
    warnings_logger.setLevel(logging.WARNING if verbosity > 0 else logging.ERROR)
    warnings_logger.propagate = False
    if verbosity <= 0:
        warnings.simplefilter("ignore")


def keep_order() -> None:
    """Line-buffer stdout and stderr, so that through a pipe (`2>&1 | tee`, CI logs) the lines of
    taxipipe and of the libraries that write to stdout without flushing come out in order."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # absent where a kernel or test replaced it
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def quiet() -> bool:
    """True under -q: the run's lines and progress are not shown."""
    return LOGGER.level > logging.INFO


def verbose() -> bool:
    """True under -v."""
    return logging.NOTSET < LOGGER.level <= logging.DEBUG


def say(line: str = "") -> None:
    if not quiet():
        print(line, file=_human_stream or sys.stdout, flush=True)


def task_started(name: str) -> None:
    say(f"🚀 Running task: {name}")


def task_done(name: str, seconds: float, summary: str | None = None) -> None:
    if summary:
        say(f"   {summary}")
    say(f"✅ Task '{name}' completed in {seconds:.2f}s")


def task_up_to_date(name: str) -> None:
    say(f"⏭️  Task '{name}': Up to date")


def task_failed(name: str, reason: str) -> None:
    """Shown even under -q: it is the error."""
    print(f"❌ Task '{name}' failed: {reason}", file=_human_stream or sys.stdout, flush=True)


def pipeline_failed(reason: str) -> None:
    print(f"❌ {reason}", file=sys.stderr, flush=True)
