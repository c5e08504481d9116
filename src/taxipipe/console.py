"""The seed's console output, shared by every runner so they all read alike."""

from __future__ import annotations

import sys
from typing import Mapping

from taxipipe.config import Settings


def say(line: str = "") -> None:
    print(line, flush=True)


def header(runner: str, settings: Settings, target: str, force: bool | None = None) -> None:
    """Title, target and the data months the run will use."""
    partition = settings.partition
    say(f"🚀 Starting ML Pipeline ({runner} runner)")
    say(f"🎯 Target: {target}")
    say(f"📅 Data: {partition.color} {partition.label} (validation {partition.next().label})")
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
    say(f"❌ Task '{name}' failed: {reason}")


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
