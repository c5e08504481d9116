# PYTHON_ARGCOMPLETE_OK
"""The `taxipipe` command. Heavy libraries load only inside the commands that need them.

Each command is one `add_*` function (in runs.py, models.py or stack.py) that builds its parser
and names its handler; a new command is a new function and one line in `COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, Callable, Sequence

from taxipipe import __version__
from taxipipe.cli.models import add_compare, add_monitor, add_predict, add_serve, add_ui
from taxipipe.cli.parsing import Handler, HelpFormatter
from taxipipe.cli.runs import add_config, add_make, add_run
from taxipipe.cli.stack import add_completion, add_stack, stack_runner_env
from taxipipe.errors import TaxipipeError
from taxipipe.flags import add_output_flags
from taxipipe.safety import interrupts
from taxipipe.safety.atomic import unfinished_writes_removed
from taxipipe.safety.interrupts import Terminated

__all__ = ["CLOSED_PIPE_STATUS", "COMMANDS", "build_parser", "entry", "main", "stack_runner_env"]

#: The status a shell reports for a command that a closed pipe stopped (128 + SIGPIPE), as for git.
CLOSED_PIPE_STATUS = 128 + signal.SIGPIPE

COMMANDS: tuple[Callable[[Any], None], ...] = (
    add_run,
    add_make,
    add_config,
    add_ui,
    add_compare,
    add_serve,
    add_predict,
    add_monitor,
    add_stack,
    add_completion,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taxipipe", formatter_class=HelpFormatter,
        description="NYC taxi trip-duration pipeline: one ML job, many orchestration styles.",
    )
    parser.add_argument("--version", action="version", version=f"taxipipe {__version__}")
    add_output_flags(parser, 0)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


def _silence_stdout() -> None:
    """After the reader of stdout went away: send what is left to /dev/null, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    interrupts.install()
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from taxipipe import console

    console.configure(args.verbosity, human_to_stderr=getattr(args, "json", False) and args.command == "run")
    handler: Handler = args.handler
    with unfinished_writes_removed():
        return _run(handler, args)


def _run(handler: Handler, args: argparse.Namespace) -> int:
    """Run a command's handler: an error a user can cause is one sentence and exit status 1."""
    from taxipipe import console

    try:
        return handler(args)
    except TaxipipeError as exc:
        console.pipeline_failed(str(exc))
        return 1
    except KeyboardInterrupt:
        console.pipeline_failed("interrupted")
        return 128 + signal.SIGINT
    except Terminated:
        console.pipeline_failed("interrupted")
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        _silence_stdout()
        return CLOSED_PIPE_STATUS
    except Exception as exc:
        from taxipipe.errors import storage_error

        problem = storage_error(exc)
        if problem is None:
            raise
        console.pipeline_failed(str(problem))
        return 1


def entry() -> None:
    """The console script: run `main`, then leave without tearing the interpreter down.

    Output is flushed and every store write is already committed; skipping the teardown of
    MLflow, pandas and XGBoost saves most of a second on every command.
    """
    status = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        status = CLOSED_PIPE_STATUS
    sys.stderr.flush()
    os._exit(status)

