"""`taxipipe stack` (the shared servers) and `taxipipe completion` (the shell's completion script)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taxipipe.cli.parsing import command
from taxipipe.errors import StackError
from taxipipe.flags import add_settings_flags, overrides_from

if TYPE_CHECKING:
    from taxipipe.config import Settings


# -- stack ----------------------------------------------------------------------------------

def stack_runner_env(args: argparse.Namespace) -> dict[str, str]:
    """The settings flags of `stack up` as TAXIPIPE_* variables for the runs its workers start."""
    from taxipipe.config import flatten

    tables = {key: value for key, value in overrides_from(args).items() if key not in ("home", "mlflow")}
    env = {"TAXIPIPE_" + key.upper().replace(".", "__"): str(value) for key, value in flatten(tables).items()}
    if args.config is not None:
        env["TAXIPIPE_CONFIG"] = str(args.config.resolve())
    return env


def stack_settings(args: argparse.Namespace) -> Settings:
    """The settings flags, with `--listen` as stack.listen (only `up` takes it, and --new-credentials)."""
    from taxipipe.config import load_settings

    if args.action != "up" and (args.listen is not None or args.new_credentials):
        raise StackError(f"--listen and --new-credentials go with `taxipipe stack up`, not `{args.action}`")
    overrides = overrides_from(args)
    if args.listen is not None:
        overrides["stack"] = {"listen": args.listen}
    return load_settings(args.config, overrides)


def cmd_stack(args: argparse.Namespace) -> int:
    from taxipipe.runners.engines import ENGINES
    from taxipipe.stack import control

    settings = stack_settings(args)
    if (args.action == "join") != (args.file is not None):
        raise StackError("`taxipipe stack join FILE` takes a join file; up, down, status and env take none"
                         if args.action != "join" else "`taxipipe stack join` needs the join file: "
                         "taxipipe stack join FILE")
    if args.action != "join" and args.engines is not None:
        raise StackError(f"--engines goes with `taxipipe stack join`, not `{args.action}`")
    if args.action != "env" and args.join is not None:
        raise StackError(f"--join goes with `taxipipe stack env`, not `{args.action}`")
    if args.action == "join":
        from taxipipe.stack import joining

        names = [name.strip() for name in args.engines.split(",")] if args.engines is not None else None
        return joining.join(settings, args.file, ENGINES, names)
    if args.action == "up":
        control.up(settings, ENGINES, stack_runner_env(args), new_credentials=args.new_credentials)
    elif args.action == "down":
        control.down(settings, ENGINES)
    elif args.action == "env" and args.join is not None:
        from taxipipe.stack import joining

        print(joining.environment(settings, args.join, ENGINES))
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
        workers = control.joined(located.settings, ENGINES)
        if workers:
            width = max(len(worker.host) for worker in workers)
            print("joined workers:")
            for worker in workers:
                print(f"  {worker.host:<{width}}  {worker.engine:<8}  {'alive' if worker.alive else 'gone'}")
        return 0 if all(state.state == "healthy" for state in states) else 1
    return 0


def add_stack(commands: Any) -> None:
    stack = command(commands, "stack", cmd_stack,
                    "PostgreSQL, MLflow, Airflow, Prefect and Dagster servers on 127.0.0.1, or for workers "
                    "on other hosts with --listen; workers of such a stack (docs/production.md)",
                    description="Run the shared stack in the background, with state and logs in HOME/stack.")
    stack.add_argument("action", choices=["up", "down", "status", "env", "join"],
                       help="up: start what is missing; down: stop everything; status: health of each "
                            "service and the joined workers (exit 1 if a service is not healthy); env: export "
                            "lines for a shell; join FILE: run this host's workers for the stack of a join "
                            "file, until SIGTERM or Ctrl-C")
    stack.add_argument("file", nargs="?", type=Path, metavar="FILE",
                       help="join: the join file `stack up --listen` wrote on the server host")
    stack.add_argument("--engines", metavar="NAMES",
                       help="join: the engines whose workers to run, comma-separated (default: every engine "
                            "with a worker, and dask: airflow,prefect,dask)")
    stack.add_argument("--join", metavar="FILE", type=Path,
                       help="env, on a joined host: export lines for the stack of this join file (after "
                            "the checks `join` makes)")
    stack.add_argument("--listen", metavar="ADDRESS",
                       help="up: the servers workers reach (MLflow, Airflow's API, Prefect, a Dask scheduler) "
                            "listen on this address of the host, with credentials, and a join file for "
                            "workers is written (setting stack.listen)")
    stack.add_argument("--new-credentials", action="store_true",
                       help="up, on a stopped stack: new passwords, keys and certificates (old join files "
                            "stop working)")
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

