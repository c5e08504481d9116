"""Prefect on this machine: its state under the project home, and a flow run's settings.

Prefect reads its settings once, when it is first imported: call `configure(home)` before
anything imports prefect (this module does not import it at load time).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taxipipe.config import Settings, load_settings, merge
from taxipipe.runners.prefect.environment import prefect_environment
from taxipipe.flags import overrides_from, settings_from

#: The monthly deployment of the flow (`flow.monthly_deployment`).
DEPLOYMENT_NAME = "monthly-local"
#: 06:00 on the 15th of every month: by then TLC has published the month before last.
MONTHLY_CRON = "0 6 15 * *"


def local_environment(home: Path) -> dict[str, str]:
    """Prefect settings for an offline run with its database in {home}/prefect (a temporary
    local server gets 90 s to start on busy cores)."""
    return {**prefect_environment(home / "prefect"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}


def configure(home: Path) -> None:
    """Apply `local_environment`; variables already set win (PREFECT_API_URL of a server...)."""
    for name, value in local_environment(home).items():
        os.environ.setdefault(name, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class FlowArguments:
    """A command line's settings, and the same as a flow run's parameters."""

    settings: Settings
    config: str | None
    overrides: dict[str, Any]


def flow_arguments(args: argparse.Namespace) -> FlowArguments:
    """The settings of `args` (raises TaxipipeError), with Prefect configured under their home.

    A flow run gets the config file's absolute path and the flags as overrides, the home
    included, so a flow run in another process or directory uses the same settings.
    """
    settings = settings_from(args)
    configure(settings.home)
    config = str(args.config.absolute()) if args.config else None
    return FlowArguments(settings, config, merge(overrides_from(args), {"home": str(settings.home)}))


def flow_settings(color: str | None, year: int | None, month: int | None,
                  config: str | None, overrides: dict[str, Any] | None) -> Settings:
    """The settings of a flow run: the flow's parameters over the config file and TAXIPIPE_* env."""
    given = {"color": color, "year": year, "month": month}
    return load_settings(config, merge(overrides, {"data": {k: v for k, v in given.items() if v is not None}}))
