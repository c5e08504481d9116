"""`taxipipe stack` (the shared servers) and `taxipipe completion` (the shell's completion script)."""

from __future__ import annotations

import argparse
from typing import Any

from taxipipe.cli.parsing import command
from taxipipe.flags import add_settings_flags, overrides_from, settings_from


# -- stack ----------------------------------------------------------------------------------

def stack_runner_env(args: argparse.Namespace) -> dict[str, str]:
    """The settings flags of `stack up` as TAXIPIPE_* variables for the runs its workers start."""
    from taxipipe.config import flatten

    tables = {key: value for key, value in overrides_from(args).items() if key not in ("home", "mlflow")}
    env = {"TAXIPIPE_" + key.upper().replace(".", "__"): str(value) for key, value in flatten(tables).items()}
    if args.config is not None:
        env["TAXIPIPE_CONFIG"] = str(args.config.resolve())
    return env


def cmd_stack(args: argparse.Namespace) -> int:
    from taxipipe.runners.engines import ENGINES
    from taxipipe.stack import control

    settings = settings_from(args)
    if args.action == "up":
        control.up(settings, ENGINES, stack_runner_env(args))
    elif args.action == "down":
        control.down(settings, ENGINES)
    elif args.action == "env":
        print(control.environment(control.locate(settings), ENGINES))
    else:
        located = control.locate(settings)
        print(located.line)
        states = control.status(located.settings, ENGINES)
        width = max(len(state.name) for state in states)
        for state in states:
            pid = f"pid {state.pid}" if state.pid else "-"
            print(f"{state.name:<{width}}  {state.state:<9}  {state.url or '-':<32}  {pid}")
        return 0 if all(state.state == "healthy" for state in states) else 1
    return 0


def add_stack(commands: Any) -> None:
    stack = command(commands, "stack", cmd_stack,
                    "PostgreSQL, MLflow, Airflow, Prefect and Dagster servers on 127.0.0.1 (docs/production.md)",
                    description="Run the shared stack in the background, with state and logs in HOME/stack.")
    stack.add_argument("action", choices=["up", "down", "status", "env"],
                       help="up: start what is missing; down: stop everything; status: health of each "
                            "service (exit 1 if one is not healthy); env: export lines for a shell")
    add_settings_flags(stack)


# -- completion -----------------------------------------------------------------------------

def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(["taxipipe"], shell=args.shell), end="")
    return 0


def add_completion(commands: Any) -> None:
    completion = command(commands, "completion", cmd_completion, "print the shell completion script",
                         description='Print the completion script: eval "$(taxipipe completion bash)" '
                                     "in ~/.bashrc (or zsh in ~/.zshrc).")
    completion.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")

