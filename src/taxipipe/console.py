"""The seed's console output, shared by every runner so they all read alike.

The run's lines go to stdout unless the `taxipipe` logger is set above INFO (`-q`);
`configure` sets the levels the command line's -v/-q ask for, for taxipipe and its libraries.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Mapping, TextIO

if TYPE_CHECKING:
    from taxipipe.config import Settings

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


def header(runner: str, settings: Settings, target: str | None = None, force: bool | None = None,
           dry_run: bool = False) -> None:
    """Title, target (the last step the run reaches; every runner names it) and the data months
    the run will use."""
    from taxipipe.window import window_label

    partition = settings.partition
    say(f"🔍 Dry run ({runner} runner): nothing is executed" if dry_run
        else f"🚀 Starting ML Pipeline ({runner} runner)")
    if target is not None:
        say(f"🎯 Target: {target}")
    say(f"📅 Data: {partition.color} {window_label(settings.training_months)} "
        f"(validation {settings.validation_month.label})")
    if force is not None:
        say(f"🔨 Force: {force}")
    say("=" * 60)


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


def final_summary(records: Mapping[str, Mapping]) -> None:
    """The closing lines: RMSE and MLflow run id (and the deployment verdict if any)."""
    say("=" * 60)
    say("🎉 Pipeline completed successfully!")
    trained = records.get("train")
    if trained:
        say(f"📊 Final model RMSE: {trained['rmse']:.4f}")
        say(f"🆔 Model run ID: {trained['run_id']}")
    deployed = records.get("deploy")
    if deployed:
        say(f"🏷️  {deployed['summary']}")
    from taxipipe.peak_memory import describe, peak_rss_bytes

    say(f"📈 Peak memory: {describe(peak_rss_bytes())} (this process)")


def final_record(records: Mapping[str, Mapping]) -> dict[str, Any]:
    """What a finished run produced, for machines (`taxipipe run --json`)."""
    from taxipipe.peak_memory import peak_rss_bytes

    trained, deployed = records.get("train", {}), records.get("deploy", {})
    last = records[next(reversed(records))] if records else {}
    return {"partition": deployed.get("partition"), "rmse": trained.get("rmse"),
            "run_id": trained.get("run_id"), "best_iteration": trained.get("best_iteration"),
            "model_name": deployed.get("model_name"), "version": deployed.get("version"),
            "champion": deployed.get("champion"), "reason": deployed.get("reason"),
            "window": trained.get("window"), "compute": trained.get("compute"),
            "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1), "step_seconds": last.get("timings", {})}


def markdown_report(settings: Settings, records: Mapping[str, Mapping], states: Mapping[str, str]) -> str:
    """A run's report in markdown: RMSE, row counts, and each step's state and time."""
    from taxipipe.window import window_label

    partition = settings.partition
    lines = [f"# ml-pipeline: {partition.color} {window_label(settings.training_months)} "
             f"(validation {settings.validation_month.label})", ""]
    trained = records.get("train")
    if trained:
        lines += [f"**RMSE:** {trained['rmse']:.4f} (MLflow run `{trained['run_id']}`)", ""]
    if "deploy" in records:
        lines += [f"**Deployment:** {records['deploy']['summary']}", ""]
    transformed = records.get("transform")
    if transformed:
        lines += ["| month | rows read | rides kept |", "|---|---:|---:|"]
        lines += [f"| {role} | {transformed[role]['rows_in']:,} | {transformed[role]['rows']:,} |"
                  for role in ("train", "validation")]
        lines.append("")
    lines += ["| step | state | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {states.get(name, 'Completed')} | {record['seconds']:.2f} |"
              for name, record in records.items()]
    lines += ["", "Cached steps show the time they took when they ran."]
    return "\n".join(lines) + "\n"
