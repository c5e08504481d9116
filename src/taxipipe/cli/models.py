"""The commands around the models a run made: `ui`, `compare`, `serve`, `predict` and `monitor`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from taxipipe.cli.parsing import command
from taxipipe.flags import add_settings_flags, overrides_from, settings_from


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
