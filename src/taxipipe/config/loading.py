"""The settings object and its loading: defaults < config file < TAXIPIPE_* environment < flags.

`Settings` holds every section and the values derived from them (the months a run reads, the
tracking URI); `load_settings` builds it and `describe_settings` says where each value came from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from taxipipe.config.sections import (
    ArtifactSettings,
    ComputeSettings,
    DataSettings,
    MlflowSettings,
    ModelSettings,
    MonitorSettings,
    ServeSettings,
    StackSettings,
    ValidationSettings,
)
from taxipipe.config.sources import CONFIG_ENV, ENV_PREFIX, FILE_VALUES, FileSource, FilteredEnvSource, read_config_file
from taxipipe.errors import ConfigError
from taxipipe.layout import Home
from taxipipe.partition import Partition


class Settings(BaseSettings):
    """Every setting of the pipeline, one section per concern."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    home: Path = Field(default=Path("~/.taxipipe"), description="all local state lives here")
    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    mlflow: MlflowSettings = MlflowSettings()
    validation: ValidationSettings = ValidationSettings()
    artifacts: ArtifactSettings = ArtifactSettings()
    serve: ServeSettings = ServeSettings()
    monitor: MonitorSettings = MonitorSettings()
    stack: StackSettings = StackSettings()
    compute: ComputeSettings = ComputeSettings()

    @field_validator("home", mode="before")
    @classmethod
    def _home_given(cls, home: Any) -> Any:
        """An empty home (`TAXIPIPE_HOME=`) would make the current directory the home."""
        if isinstance(home, str) and not home.strip():
            raise PydanticCustomError("sentence", "{sentence}", {"sentence": (
                "home is empty (TAXIPIPE_HOME=, --home '' or home = ''), which would make the current "
                "directory the home: give a directory, or unset it for ~/.taxipipe")})
        return home

    @model_validator(mode="after")
    def _expand_home(self) -> Settings:
        expanded = self.home.expanduser().absolute()
        if expanded != self.home:
            object.__setattr__(self, "home", expanded)
        return self

    @property
    def partition(self) -> Partition:
        """The training month (the partition a run's files and records are keyed by)."""
        return Partition(self.data.color, self.data.year, self.data.month)

    @property
    def training_months(self) -> tuple[Partition, ...]:
        """The months the model trains on, oldest first: `data.train_months` ending at `partition`."""
        from taxipipe.window import training_window

        return training_window(self.partition, self.data.train_months)

    @property
    def validation_month(self) -> Partition:
        """The month after the training months."""
        return self.partition.shift(1)

    @property
    def months(self) -> tuple[Partition, ...]:
        """Every month a run reads (one download node each): training months, then validation."""
        return (*self.training_months, self.validation_month)

    def tracking_uri(self) -> str:
        """The MLflow tracking URI: the configured one, or the embedded SQLite store."""
        return self.mlflow.tracking_uri or f"sqlite:///{Home(self.home).mlflow_store}"

    def experiment_name(self, runner: str) -> str:
        return self.mlflow.experiment_name.format(runner=runner)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, FilteredEnvSource(settings_cls), FileSource(settings_cls)


def load_settings(
    config_file: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build the settings: defaults < file (`config_file` or $TAXIPIPE_CONFIG) < env < overrides.

    `overrides` are nested tables like the file's, e.g. {"data": {"month": 2}}.
    """
    path = config_file or os.environ.get(CONFIG_ENV)
    token = FILE_VALUES.set(read_config_file(Path(path)) if path else {})
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, path)) from None
    finally:
        FILE_VALUES.reset(token)


def _describe_validation_error(exc: ValidationError, path: Any) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        if err["type"] == "sentence":
            problems.append(err["msg"])
        elif err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        else:
            problems.append(f"'{key}': {err['msg']} (got {err.get('input')!r})")
    where = f" (config file {path}, TAXIPIPE_* environment or flags)" if path else ""
    return "invalid configuration" + where + ": " + "; ".join(problems)


def flatten(tables: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in tables.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def get_value(settings: Settings, dotted_key: str) -> Any:
    """The value of a dotted key such as `model.params.max_depth`."""
    value: Any = settings
    for part in dotted_key.split("."):
        value = getattr(value, part)
    return value


def default_value(dotted_key: str) -> Any:
    """The built-in default of a dotted key (no file, environment or flags applied)."""
    section, *rest = dotted_key.split(".")
    value: Any = Settings.model_fields[section].default
    for part in rest:
        value = getattr(value, part)
    return value


def describe_settings(
    config_file: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> list[tuple[str, Any, str]]:
    """(key, effective value, origin) for every setting; origin is default|file|env|flag."""
    settings = load_settings(config_file, overrides)
    path = config_file or os.environ.get(CONFIG_ENV)
    layers = [
        ("file", flatten(read_config_file(Path(path)) if path else {})),
        ("env", flatten(FilteredEnvSource(Settings)())),
        ("flag", flatten(overrides or {})),
    ]
    rows = []
    effective = flatten(settings.model_dump(mode="json"))
    effective["mlflow.tracking_uri"] = settings.tracking_uri()
    for key, value in effective.items():
        origin = "default"
        for name, layer in layers:
            if key in layer:
                origin = name
        if key.startswith("model.params.") and origin == "default" and settings.model.preset:
            origin = f"preset {settings.model.preset}"
        rows.append((key, value, origin))
    return rows
