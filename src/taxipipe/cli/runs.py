"""The commands that run the pipeline: `run`, `make`, and `config show` of the settings they use."""

from __future__ import annotations

import argparse
from typing import Any

from taxipipe.cli.parsing import command
from taxipipe.errors import TaxipipeError
from taxipipe.flags import add_settings_flags, overrides_from, settings_from


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
