"""The flags every pipeline command shares (settings, -v/-q), and the settings they give.

`taxipipe`'s commands, the examples and the Prefect entry points build their parsers with
`add_settings_flags` and read them with `settings_from`: one flag overrides one setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection

from taxipipe.features import FEATURE_SETS
from taxipipe.models import KIND_NAMES

if TYPE_CHECKING:
    from taxipipe.config import Settings


def add_output_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    """-v/-q, accepted before and after the command (`taxipipe -q run` or `taxipipe run -q`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                       help="also show library messages, warnings and training metrics every 10 rounds")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                       help="show only errors (and the --json record)")


def add_settings_flags(parser: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    """The flags every pipeline command shares, or `only` those named (`--home` -> "home"); each
    overrides one setting."""
    group = parser.add_argument_group("settings (override config file and TAXIPIPE_* env)")

    def flag(name: str, **kwargs: Any) -> None:
        if only is None or name.lstrip("-").replace("-", "_") in only:
            group.add_argument(name, **kwargs)

    flag("--config", type=Path, help="TOML or YAML config file (or $TAXIPIPE_CONFIG)")
    flag("--home", help="home directory for data, state and the MLflow store")
    flag("--color", choices=["green", "yellow"], help="taxi colour")
    flag("--year", type=int, help="training year")
    flag("--month", type=int, help="training month (validation is the next one)")
    flag("--model", choices=KIND_NAMES, help="model kind (default xgboost)")
    flag("--features", choices=sorted(FEATURE_SETS), help="feature encoding")
    flag("--preset", choices=["zoomcamp"], help="named model parameter preset")
    flag("--tracking-uri", help="MLflow tracking URI (default: a SQLite store in the home)")
    flag("--url-template", help="URL, file:// URL or path template of TLC months")
    flag("--train-months", type=int, metavar="N", help="train on the N months ending at --year/--month (default 1)")
    flag("--engine", choices=["local", "dask"], help="where training runs (default local)")
    flag("--scheduler", metavar="tcp://HOST:PORT", help="Dask scheduler for --engine dask, tcp:// or tls:// "
         "(default: a local cluster)")


FLAG_KEYS = {
    "home": ("home",),
    "color": ("data", "color"),
    "year": ("data", "year"),
    "month": ("data", "month"),
    "url_template": ("data", "url_template"),
    "model": ("model", "kind"),
    "features": ("model", "features"),
    "preset": ("model", "preset"),
    "tracking_uri": ("mlflow", "tracking_uri"),
    "train_months": ("data", "train_months"),
    "engine": ("compute", "engine"),
    "scheduler": ("compute", "dask_scheduler"),
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


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of the config file, TAXIPIPE_* environment and the given flags."""
    from taxipipe.config import load_settings

    return load_settings(args.config, overrides_from(args))
