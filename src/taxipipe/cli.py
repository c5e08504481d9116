"""The `taxipipe` command. Heavy libraries load only inside the commands that need them."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from taxipipe import __version__
from taxipipe.errors import TaxipipeError


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every pipeline command shares; each overrides one setting."""
    group = parser.add_argument_group("settings (override config file and TAXIPIPE_* env)")
    group.add_argument("--config", type=Path, help="TOML or YAML config file (or $TAXIPIPE_CONFIG)")
    group.add_argument("--home", type=Path, help="home directory for data, state and the MLflow store")
    group.add_argument("--color", choices=["green", "yellow"], help="taxi colour")
    group.add_argument("--year", type=int, help="training year")
    group.add_argument("--month", type=int, help="training month (validation is the next one)")
    group.add_argument("--features", choices=["categorical", "onehot"], help="feature encoding")
    group.add_argument("--preset", choices=["zoomcamp"], help="named model parameter preset")
    group.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite in the home)")
    group.add_argument("--url-template", help="URL, file:// URL or path template of TLC months")


FLAG_KEYS = {
    "home": ("home",),
    "color": ("data", "color"),
    "year": ("data", "year"),
    "month": ("data", "month"),
    "url_template": ("data", "url_template"),
    "features": ("model", "features"),
    "preset": ("model", "preset"),
    "tracking_uri": ("mlflow", "tracking_uri"),
}


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Nested settings tables from the flags that were given."""
    tables: dict[str, Any] = {}
    for flag, path in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        table = tables
        for part in path[:-1]:
            table = table.setdefault(part, {})
        table[path[-1]] = value
    return tables


def settings_from(args: argparse.Namespace):
    from taxipipe.config import load_settings

    return load_settings(args.config, overrides_from(args))


def cmd_run(args: argparse.Namespace) -> int:
    from taxipipe.runners.simple import SimplePipeline, StepFailed

    try:
        SimplePipeline(settings_from(args)).run()
    except StepFailed:
        return 1
    return 0


def cmd_make(args: argparse.Namespace) -> int:
    from taxipipe.runners import make
    from taxipipe.runners.simple import StepFailed

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


def cmd_config_show(args: argparse.Namespace) -> int:
    from taxipipe.config import describe_settings

    rows = describe_settings(args.config, overrides_from(args))
    width = max(len(key) for key, _, _ in rows)
    for key, value, origin in rows:
        print(f"{key:<{width}}  {value!s:<50}  [{origin}]")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    (settings.home / "mlflow").mkdir(parents=True, exist_ok=True)
    address = f"http://127.0.0.1:{args.port}"
    print(f"📈 MLflow UI on {address} (store {settings.tracking_uri()}); Ctrl-C stops it", flush=True)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.tracking_uri(),
               "--default-artifact-root", (settings.home / "mlflow" / "artifacts").as_uri(),
               "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"]
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(sys.executable, command)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from taxipipe.compare import report

    text, status = report(settings_from(args), latest_only=not args.all, as_machine=args.json,
                          plot_path=args.plot, check=args.check)
    print(text)
    if args.plot is not None:
        print(f"🖼️  plot written to {args.plot}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taxipipe",
        description="NYC taxi trip-duration pipeline: one ML job, many orchestration styles.",
    )
    parser.add_argument("--version", action="version", version=f"taxipipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the nine steps in order (the simple runner)")
    add_settings_flags(run)
    run.set_defaults(handler=cmd_run)

    make = commands.add_parser(
        "make", help="build a target incrementally: rerun only the steps whose inputs, config or code changed",
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
    make.set_defaults(handler=cmd_make)

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_commands.add_parser("show", help="effective settings and where each came from")
    add_settings_flags(show)
    show.set_defaults(handler=cmd_config_show)

    ui = commands.add_parser("ui", help="start the MLflow UI on the store, bound to 127.0.0.1")
    add_settings_flags(ui)
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(handler=cmd_ui)
    compare = commands.add_parser("compare", help="compare the runs each runner recorded in MLflow")
    add_settings_flags(compare)
    compare.add_argument("--all", action="store_true", help="every run, not only each runner's latest")
    compare.add_argument("--json", action="store_true", help="print JSON for machines")
    compare.add_argument("--plot", type=Path, metavar="FILE.png", help="draw RMSE and step times")
    compare.add_argument("--check", action="store_true",
                         help="exit 1 if runs on the same data and config disagree on RMSE")
    compare.set_defaults(handler=cmd_compare)
    return parser


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """Turn SIGTERM into SystemExit so temporary files are removed on the way out."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except TaxipipeError as exc:
        from taxipipe import console

        console.pipeline_failed(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """The console script: run `main`, then leave without tearing the interpreter down.

    Output is flushed and every store write is already committed; skipping the teardown of
    MLflow, pandas and XGBoost saves most of a second on every command.
    """
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    entry()
