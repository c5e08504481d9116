"""Where settings come from besides the defaults and flags: the config file and the TAXIPIPE_*
environment (a TAXIPIPE_* name that is neither a setting nor one of `NOT_SETTINGS` is refused),
and how nested tables of settings merge."""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Mapping

from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource, PydanticBaseSettingsSource

from taxipipe.config.sections import Section
from taxipipe.errors import ConfigError

ENV_PREFIX = "TAXIPIPE_"
CONFIG_ENV = "TAXIPIPE_CONFIG"
SERVE_SETTINGS_ENV, SERVE_SHARED_ENV = "TAXIPIPE_SERVE_SETTINGS", "TAXIPIPE_SERVE_SHARED"
#: The TAXIPIPE_* variables that are not settings; any other TAXIPIPE_* name must name one. The
#: config file, what `taxipipe serve` hands its workers, and the real TLC months and shared
#: folder that the tests and benchmarks read.
NOT_SETTINGS = frozenset({CONFIG_ENV, SERVE_SETTINGS_ENV, SERVE_SHARED_ENV, "TAXIPIPE_TEST_DATA",
                          "TAXIPIPE_SHARED"})


class FilteredEnvSource(EnvSettingsSource):
    """TAXIPIPE_* variables, minus the ones that are not settings (`NOT_SETTINGS`); a name that
    is neither is refused, so a misspelt one is not ignored."""

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        unknown = [_unknown_variable(fields, name) for name in sorted(os.environ)
                   if name.upper().startswith(ENV_PREFIX) and not _names_a_setting(fields, name)]
        if unknown:
            raise ConfigError(
                f"unknown environment variable{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                f"a setting is TAXIPIPE_HOME or TAXIPIPE_SECTION__KEY (sections {', '.join(_sections(fields))}), "
                f"and the other TAXIPIPE_ names are {', '.join(sorted(NOT_SETTINGS))}; fix the name or unset it")
        return {k: v for k, v in super().__call__().items() if k in fields}


def _sections(fields: Mapping[str, FieldInfo]) -> list[str]:
    """The settings' tables (data, model...): what TAXIPIPE_SECTION__KEY may name."""
    return [name for name, field in fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, Section)]


def _names_a_setting(fields: Mapping[str, FieldInfo], variable: str) -> bool:
    """Whether a TAXIPIPE_* variable names a setting (a key's validity is the model's to check)
    or is one of `NOT_SETTINGS`."""
    name = variable.upper()
    field, nested, _ = name.removeprefix(ENV_PREFIX).lower().partition("__")
    return name in NOT_SETTINGS or (field in _sections(fields) if nested else field in fields)


def _unknown_variable(fields: Mapping[str, FieldInfo], variable: str) -> str:
    """The variable's name, with the setting it probably meant (TAXIPIPE_DATA_YEAR: TAXIPIPE_DATA__YEAR)."""
    import difflib

    field, nested, key = variable.upper().removeprefix(ENV_PREFIX).lower().partition("__")
    head, _, tail = field.partition("_")
    if not nested and head in _sections(fields) and tail:
        guess = f"{head}__{tail}"
    else:
        close = difflib.get_close_matches(field, list(fields), n=1)
        guess = f"{close[0]}{nested}{key}" if close else ""
    suggestion = f"{ENV_PREFIX}{guess.upper()}"
    return f"{variable} (did you mean {suggestion}?)" if guess and _names_a_setting(fields, suggestion) else variable


#: The tables of the config file of the load in progress (per thread and task, see `load_settings`).
FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("taxipipe_config_file_values", default={})


class FileSource(PydanticBaseSettingsSource):
    """The config file chosen for this load."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return FILE_VALUES.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(FILE_VALUES.get())


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML config file into nested tables."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:
        raise ConfigError(f"config file {path} cannot be parsed: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold tables of settings, not {type(data).__name__}")
    return data


def merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Nested settings tables merged key by key; later layers win (None layers are skipped)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value)
            elif isinstance(value, Mapping):
                merged[key] = merge(value)
            else:
                merged[key] = value
    return merged
