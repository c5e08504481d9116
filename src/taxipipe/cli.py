# PYTHON_ARGCOMPLETE_OK
"""The `taxipipe` command. Heavy libraries load only inside the commands that need them.

Each command is one `add_*` function that builds its parser and names its handler; a new
command is a new function and one line in `COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from taxipipe import __version__
from taxipipe.errors import TaxipipeError
from taxipipe.flags import FLAG_KEYS, add_output_flags, add_settings_flags, overrides_from, settings_from
from taxipipe.safety import interrupts
from taxipipe.safety.atomic import unfinished_writes_removed
from taxipipe.safety.interrupts import Terminated

#: The status a shell reports for a command that a closed pipe stopped (128 + SIGPIPE), as for git.
CLOSED_PIPE_STATUS = 128 + signal.SIGPIPE

Handler = Callable[[argparse.Namespace], int]


class HelpFormatter(argparse.HelpFormatter):
    """Help that shows each option's default; a settings flag shows the setting's built-in default.

    The settings module loads only when help is printed, so parsing stays cheap.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS:
            return text
        default = action.default
        if action.dest in FLAG_KEYS:
            from taxipipe.config import default_value

            default = default_value(".".join(FLAG_KEYS[action.dest]))
        if default is None or not action.option_strings or action.nargs == 0:
            return text
        return f"{text} (default: {str(default).replace('%', '%%')})"


def command(commands: Any, name: str, handler: Handler, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand with the shared output flags, the help formatter and its handler."""
    parser = commands.add_parser(name, help=help, formatter_class=HelpFormatter, **kwargs)
    add_output_flags(parser, argparse.SUPPRESS)
    parser.set_defaults(handler=handler)
    return parser


# -- run ------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    import json

    from taxipipe import console
    from taxipipe.errors import StepFailed
    from taxipipe.runners.session import final_record
    from taxipipe.runners.simple import SimplePipeline

    try:
        settings = settings_from(args)
        records = SimplePipeline(settings, hold=f"`taxipipe run`, {settings.partition}").run()
    except StepFailed as failed:
        if args.json:
            print(json.dumps({"ok": False, "step": failed.step, "error": failed.reason}), flush=True)
        return 1
    except TaxipipeError as exc:
        if not args.json:
            raise
        console.pipeline_failed(str(exc))
        print(json.dumps({"ok": False, "step": None, "error": str(exc)}), flush=True)
        return 1
    if args.json:
        print(json.dumps({"ok": True, **final_record(records)}), flush=True)
    return 0


def add_run(commands: Any) -> None:
    run = command(commands, "run", cmd_run, "run the nine steps in order (the simple runner)",
                  description="Run the nine steps in order, in this process.")
    run.add_argument("--json", action="store_true",
                     help="print the final record as one JSON line on stdout (the run's lines go to stderr)")
    add_settings_flags(run)


# -- make -----------------------------------------------------------------------------------

def cmd_make(args: argparse.Namespace) -> int:
    from taxipipe.errors import StepFailed
    from taxipipe.runners.make import runner as make

    if args.list:
        make.list_targets()
        return 0
    settings = settings_from(args)
    target = args.target or make.DEFAULT_TARGET
    if args.dry_run:
        make.MakeRun(settings, target, args.force, args.jobs).dry_run()
        return 0
    if args.clean:
        make.clean(settings, wait_for_lock=not args.no_wait)
        if args.target is None:
            return 0
    try:
        make.make(settings, target, args.force, args.jobs, wait_for_lock=not args.no_wait)
    except StepFailed:
        return 1
    return 0


def add_make(commands: Any) -> None:
    make = command(
        commands, "make", cmd_make,
        "build a target incrementally: rerun only the steps whose inputs, config or code changed",
        description="Build TARGET (default deploy) and what it depends on, running only the steps that are "
                    "out of date. State lives in HOME/state/{color}/{YYYY-MM}.lock.json.")
    make.add_argument("target", nargs="?", metavar="TARGET",
                      help="a step name, or 'validate' for validate_model (default: deploy)")
    modes = make.add_mutually_exclusive_group()
    modes.add_argument("--list", action="store_true", help="list the targets and what each depends on")
    modes.add_argument("--clean", action="store_true",
                       help="remove the partition's downloads, intermediates and state (not the MLflow "
                            "store); with a TARGET, build it afterwards")
    modes.add_argument("--dry-run", "-n", action="store_true",
                       help="say for every step whether it is up to date or why it would run")
    make.add_argument("--force", action="store_true", help="rebuild the target's whole chain")
    make.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                      help="run up to N independent steps at once (e.g. the two monthly downloads)")
    make.add_argument("--no-wait", action="store_true",
                      help="stop at once when another make run holds the home, instead of waiting")
    add_settings_flags(make)


# -- config ---------------------------------------------------------------------------------

def cmd_config_show(args: argparse.Namespace) -> int:
    import json

    from taxipipe.config import describe_settings

    rows = describe_settings(args.config, overrides_from(args))
    if args.json:
        print(json.dumps({key: {"value": value, "origin": origin} for key, value, origin in rows}, indent=2))
        return 0
    derived = derived_defaults(settings_from(args))
    key_width = max(len(key) for key, _, _ in rows)
    origin_width = max(len(origin) for _, _, origin in rows)
    print(f"{'KEY':<{key_width}}  {'ORIGIN':<{origin_width}}  VALUE")
    for key, value, origin in rows:
        shown = derived.get(key, "") if value is None else value
        print(f"{key:<{key_width}}  {origin:<{origin_width}}  {shown}")
    return 0


def derived_defaults(settings: Any) -> dict[str, str]:
    """What the code uses when a setting whose default depends on the machine is left unset."""
    from taxipipe.compute import GB, memory_limit_bytes
    from taxipipe.errors import StackError
    from taxipipe.stack.services import project_dir

    try:
        project = f"{project_dir(settings)} (the checkout holding the package)"
    except StackError:
        project = "none: the package is not run from a checkout; set it for `taxipipe stack`"
    return {"compute.memory_gb": f"{memory_limit_bytes(settings) / GB:.1f} (half the memory available now)",
            "stack.project_dir": project}


def add_config(commands: Any) -> None:
    config = commands.add_parser("config", help="inspect the configuration")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = command(actions, "show", cmd_config_show,
                   "effective settings and where each came from (default, file, env, flag, preset)")
    show.add_argument("--json", action="store_true", help="print {key: {value, origin}} as JSON")
    add_settings_flags(show)


# -- ui -------------------------------------------------------------------------------------

def cmd_ui(args: argparse.Namespace) -> int:
    from taxipipe import console, tracking

    settings = settings_from(args)
    uri = settings.tracking_uri()
    if tracking.sqlite_file(uri) is not None:
        tracking.prepare_store(uri)
    address = f"http://127.0.0.1:{args.port}{tracking.UI_START_PAGE}"
    print(f"📈 MLflow UI on {address} (store {uri}), for this machine only; Ctrl-C stops it", flush=True)
    root = tracking.artifact_root(uri) or (settings.home / "mlflow" / "artifacts").as_uri()
    quiet = not console.verbose()  # no line per request, no library warnings (-v shows both)
    # the hosts it answers, named, so that MLflow states them instead of advising flags `ui` lacks
    hosts = f"127.0.0.1:{args.port},localhost:{args.port}"
    command_line = tracking.server_command(args.port, root, default_artifact_root=root, allowed_hosts=hosts,
                                           quiet=quiet)
    os.execve(sys.executable, command_line, {**os.environ, **tracking.server_env(uri, quiet)})
    return 0


def add_ui(commands: Any) -> None:
    ui = command(commands, "ui", cmd_ui, "start the MLflow UI on the store, bound to 127.0.0.1")
    add_settings_flags(ui)
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1")


# -- compare --------------------------------------------------------------------------------

def cmd_compare(args: argparse.Namespace) -> int:
    from taxipipe.compare import report

    text, status, plotted = report(settings_from(args), latest_only=not args.all, as_machine=args.json,
                                   plot_path=args.plot, check=args.check)
    print(text, flush=True)
    if plotted:
        print(f"🖼️  plot written to {args.plot}", file=sys.stderr)
    return status


def add_compare(commands: Any) -> None:
    compare = command(commands, "compare", cmd_compare, "compare the runs each runner recorded in MLflow")
    add_settings_flags(compare, only={"config", "home", "tracking_uri"})
    compare.add_argument("--all", action="store_true", help="every run, not only each runner's latest")
    compare.add_argument("--json", action="store_true", help="print JSON for machines")
    compare.add_argument("--plot", type=Path, metavar="FILE.png", help="draw RMSE and step times")
    compare.add_argument("--check", action="store_true",
                         help="say whether runs on the same data and config agree on RMSE; exit 1 if not")


# -- serve / predict ------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from taxipipe.config import load_settings
    from taxipipe.serve.app import serve

    tables = overrides_from(args)
    tables["serve"] = {key: getattr(args, key) for key in ("host", "port", "workers") if getattr(args, key) is not None}
    return serve(load_settings(args.config, tables))


def add_serve(commands: Any) -> None:
    serve = command(commands, "serve", cmd_serve, "serve the champion over HTTP: /predict, /invocations, /health, /metrics, /docs",
                    description="Serve models:/<model_name>@champion from the store with FastAPI on uvicorn; "
                                "a new champion is picked up within serve.reload_seconds. A drop-in for "
                                "`mlflow models serve` (/invocations, /ping, /version). SIGTERM stops it "
                                "gracefully (exit 0).")
    serve.add_argument("--host", help="address to bind (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: serve.port, 9696)")
    serve.add_argument("--workers", type=int, metavar="N", help="server processes (default: serve.workers, 1)")
    add_settings_flags(serve)


def cmd_predict(args: argparse.Namespace) -> int:
    from taxipipe.serve.batch import score_month

    print(score_month(settings_from(args)).summary(), flush=True)
    return 0


def add_predict(commands: Any) -> None:
    predict = command(commands, "predict", cmd_predict,
                      "score every ride of a month (--year/--month) with the champion",
                      description="Score every ride of the month with the champion into "
                                  "HOME/predictions/{color}/{YYYY-MM}.parquet; print rows, seconds and RMSE.")
    add_settings_flags(predict)


def cmd_monitor(args: argparse.Namespace) -> int:
    from taxipipe.serve.monitor import monitor_month

    report = monitor_month(settings_from(args))
    print(report.table(), flush=True)
    return 3 if report.drifted else 0


def add_monitor(commands: Any) -> None:
    monitor = command(commands, "monitor", cmd_monitor,
                      "drift and RMSE of a month (--year/--month) against the champion; exit 3 past a threshold",
                      description="Compare the month with the champion's training data (PSI, KS, Wasserstein "
                                  "per feature and for the predictions; RMSE on its actual durations), write "
                                  "HOME/reports/monitor_{color}_{YYYY-MM}.html, log to the MLflow experiment "
                                  "'monitoring', write the verdict to HOME/metrics/taxipipe_monitor.prom (served "
                                  "on taxipipe serve's /metrics), and exit 3 when a monitor.* threshold is crossed.")
    add_settings_flags(monitor)


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


if __name__ == "__main__":
    entry()
