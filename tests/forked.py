"""Its one job: `taxipipe` commands and example scripts in children forked from an interpreter
that has imported the pipeline's libraries (tests/helpers.py's `run_cli` and `start_cli` use it).

A fresh interpreter spends about six seconds of CPU importing MLflow, XGBoost (with
scikit-learn and SciPy), pandas and PyArrow before a command does anything; the suite runs
about a hundred commands. Python's fork server (`multiprocessing`'s "forkserver" context)
imports them once per test worker and forks a child for each command: a process of its own,
with the command's environment, working directory, stdin (/dev/null), stdout, stderr, exit
status and signal handlers, that starts at `taxipipe.cli.entry` like the console script, or
runs a script as `python SCRIPT` does (its folder first on sys.path, its non-daemon threads
and exit handlers run at its end). What the fork server imports is tests/warm.py.
"""

from __future__ import annotations

import atexit
import contextlib
import locale
import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

#: Imported once by the fork server (this process imports neither for it).
PRELOAD = ["tests.warm", __name__]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)
_ROOT = Path(__file__).resolve().parents[1]
_started = False


def _start_server() -> None:
    """Start the fork server once, in the checkout: it imports `tests` from its working directory."""
    global _started
    if not _started:
        with contextlib.chdir(_ROOT):
            multiprocessing.forkserver.ensure_running()
        _started = True


def _command(script: str | None, args: list[str], env: dict[str, str], cwd: str, stdout: str,
             stderr: str) -> None:
    """The child: the command's environment and streams, then the console script's entry or the script."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for descriptor, path, flags in ((0, os.devnull, os.O_RDONLY), (1, stdout, os.O_WRONLY),
                                    (2, stderr, os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, descriptor)
        os.close(opened)
    encoding = env.get("PYTHONIOENCODING") or locale.getpreferredencoding(False)
    sys.stdin = open(0, encoding=encoding, closefd=False)
    sys.stdout = open(1, "w", encoding=encoding, closefd=False)
    sys.stderr = open(2, "w", encoding=encoding, errors="backslashreplace", buffering=1, closefd=False)
    try:
        _start(script, args, cwd)
        status = 0
    except SystemExit as exit_:
        status = 0 if exit_.code is None else exit_.code
        if not isinstance(status, int):
            print(status, file=sys.stderr)
            status = 1
    except BaseException:
        traceback.print_exc()
        status = 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _start(script: str | None, args: list[str], cwd: str) -> None:
    """`python -m taxipipe ARGS` (which leaves through os._exit) or `python SCRIPT ARGS`."""
    if script is None:
        from taxipipe import cli

        sys.argv, sys.path[0] = [cli.__file__, *args], cwd
        cli.entry()
    else:
        sys.argv, sys.path[0] = [script, *args], os.path.dirname(script)
        runpy.run_path(script, run_name="__main__")


class Child:
    """A command forked in the background, answering as `subprocess.Popen(..., stdout=PIPE,
    stderr=PIPE, text=True)` does: its output is read once it has exited, from files in a
    temporary directory removed with the object."""

    def __init__(self, script: str | None, args: list[str], env: dict[str, str], cwd: Path | None) -> None:
        self.args = [script or "taxipipe", *args]
        self.returncode: int | None = None
        self._scratch = tempfile.TemporaryDirectory(prefix="taxipipe-cli-")
        self._stdout, self._stderr = Path(self._scratch.name) / "stdout", Path(self._scratch.name) / "stderr"
        self._stdout.touch()
        self._stderr.touch()
        _start_server()
        self._process = _context.Process(target=_command, args=(script, args, env, str(cwd or Path.cwd()),
                                                                 str(self._stdout), str(self._stderr)))
        self._process.start()
        self.pid = self._process.pid

    def poll(self) -> int | None:
        """The exit status (minus the signal that killed it, as Popen says), or None while it runs."""
        if self.returncode is None:
            self.returncode = self._process.exitcode
            if self.returncode is not None:
                self._process.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the exit, then its stdout and stderr; on a timeout the child is killed."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise subprocess.TimeoutExpired(self.args, timeout, self._stdout.read_bytes(), self._stderr.read_bytes())
        return self._stdout.read_text(), self._stderr.read_text()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start_cli(args: list[str], env: dict[str, str], cwd: Path | None = None) -> Child:
    """`taxipipe ARGS` in a forked child, in the background, as `subprocess.Popen` starts it."""
    return Child(None, args, env, cwd)


def run_cli(args: list[str], env: dict[str, str], cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`taxipipe ARGS` in a forked child, as `subprocess.run(..., capture_output=True, text=True)` answers."""
    return _run(None, args, env, cwd, timeout)


def run_script(script: Path, args: list[str], env: dict[str, str], cwd: Path | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python SCRIPT ARGS` in a forked child, as `subprocess.run(..., capture_output=True, text=True)` answers."""
    return _run(str(script.resolve()), args, env, cwd, timeout)


def _run(script: str | None, args: list[str], env: dict[str, str], cwd: Path | None,
         timeout: float) -> subprocess.CompletedProcess[str]:
    child = Child(script, args, env, cwd)
    out, err = child.communicate(timeout)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)
