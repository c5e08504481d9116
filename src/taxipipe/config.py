"""Settings: defaults < config file < TAXIPIPE_* environment < command-line flags.

One typed object (`Settings`) holds every knob; each part of the pipeline receives it
explicitly. `load_settings` builds it and `describe_settings` says where each value came from.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from taxipipe.errors import ConfigError
from taxipipe.layout import Home
from taxipipe.models import KIND_NAMES
from taxipipe.models.base import KindParams
from taxipipe.partition import Partition

DEFAULT_URL_TEMPLATE = (
    "https://d37ci6vzurychx.cloudfront.net/trip-data/{color}_tripdata_{year}-{month:02d}.parquet"
)
ENV_PREFIX = "TAXIPIPE_"
CONFIG_ENV = "TAXIPIPE_CONFIG"
SERVE_SETTINGS_ENV, SERVE_SHARED_ENV = "TAXIPIPE_SERVE_SETTINGS", "TAXIPIPE_SERVE_SHARED"
#: The TAXIPIPE_* variables that are not settings; any other TAXIPIPE_* name must name one. The
#: config file, what `taxipipe serve` hands its workers, and the real TLC months and shared
#: folder that the tests and benchmarks read.
NOT_SETTINGS = frozenset({CONFIG_ENV, SERVE_SETTINGS_ENV, SERVE_SHARED_ENV, "TAXIPIPE_TEST_DATA",
                          "TAXIPIPE_SHARED"})


class Section(BaseModel):
    """A config table: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MlflowSettings(Section):
    tracking_uri: str | None = Field(
        default=None, description="None: a SQLite store in the home directory"
    )
    experiment_name: str = "{runner}-taxi-duration"
    model_name: str = "nyc-taxi-duration"


class DataSettings(Section):
    color: Literal["green", "yellow"] = "green"
    year: int = Field(default=2023, ge=2009, le=2100)
    month: int = Field(default=1, ge=1, le=12)
    url_template: str = DEFAULT_URL_TEMPLATE
    download_retries: int = Field(default=3, ge=0, le=10)
    download_backoff_seconds: float = Field(default=1.0, ge=0)
    train_months: int = Field(default=1, ge=1, le=120,
                              description="train on this many months ending at data.year/data.month")

    @field_validator("url_template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        from taxipipe.tlc import template_problem

        problem = template_problem(template)
        if problem:
            raise ValueError(problem)
        return template


class ModelSettings(Section):
    kind: str = Field(default=KIND_NAMES[0], description="a registered model kind (taxipipe.models)")
    preset: str | None = None
    params: SerializeAsAny[KindParams] = Field(default_factory=KindParams)
    early_stopping_rounds: int = Field(default=50, ge=1)
    features: str = Field(default="categorical", description="a feature set of taxipipe.features")

    @model_validator(mode="before")
    @classmethod
    def _kind_params(cls, data: Any) -> Any:
        """`params` become the kind's parameters: its defaults < the preset < the given values."""
        if not isinstance(data, dict):
            return data
        from taxipipe.models.registry import DEFAULT_KIND, kind_params

        given = data.get("params") or {}
        if isinstance(given, BaseModel):
            given = given.model_dump(exclude_unset=True)
        try:
            params = kind_params(data.get("kind", DEFAULT_KIND), data.get("preset"), given)
        except ConfigError as exc:
            raise PydanticCustomError("sentence", "{sentence}", {"sentence": str(exc)}) from None
        return {**data, "params": params}

    @model_validator(mode="after")
    def _kind_reads_features(self) -> ModelSettings:
        from taxipipe.models.registry import check_feature_mode

        try:
            check_feature_mode(self.kind, self.features)
        except ConfigError as exc:
            raise PydanticCustomError("sentence", "{sentence}", {"sentence": str(exc)}) from None
        return self

    @field_validator("features")
    @classmethod
    def _known_feature_set(cls, name: str) -> str:
        from taxipipe.features import FEATURE_SETS

        if name not in FEATURE_SETS:
            raise ValueError(f"unknown feature set, known: {', '.join(FEATURE_SETS)}")
        return name


class ValidationSettings(Section):
    max_rmse: float = Field(default=8.0, gt=0)
    min_rmse: float = Field(default=0.1, ge=0)
    min_improvement: float = Field(
        default=0.0, ge=0, description="minutes of RMSE a challenger must gain over the champion"
    )
    min_positive_duration_share: float = Field(default=0.9, ge=0, le=1)
    max_invalid_row_share: float = Field(default=0.0, ge=0, le=1)
    min_rows: int = Field(default=1000, ge=1, description="rides of 1..60 minutes a month must keep")

    @model_validator(mode="after")
    def _rmse_range(self) -> ValidationSettings:
        if self.min_rmse >= self.max_rmse:
            raise PydanticCustomError("sentence", "{sentence}", {"sentence": (
                f"validation.min_rmse ({self.min_rmse}) must be below validation.max_rmse ({self.max_rmse}), "
                "or no model could ever pass the gate")})
        return self


class ComputeSettings(Section):
    engine: Literal["local", "dask"] = "local"
    dask_scheduler: str = Field(default="", description="tcp://HOST:PORT; empty: a LocalCluster")
    external_memory: bool = Field(default=False, description="stream the window through XGBoost's "
                                  "external memory even when it would fit")
    memory_gb: float | None = Field(default=None, gt=0, description="None: half the available memory")

    @field_validator("dask_scheduler")
    @classmethod
    def _scheduler_address(cls, address: str) -> str:
        """Empty, or `tcp://HOST:PORT` (or tls://): refused before any download, not after."""
        from urllib.parse import urlsplit

        if not address:
            return address
        try:
            parts = urlsplit(address)
            port = parts.port
        except ValueError:
            port = None
            parts = None
        if parts is None or parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None:
            raise PydanticCustomError("sentence", "{sentence}", {"sentence": (
                f"compute.dask_scheduler '{address}' is not a Dask scheduler address: give tcp://HOST:PORT "
                "(such as tcp://127.0.0.1:8786), or leave it empty for a local cluster")})
        return address


class ArtifactSettings(Section):
    keep_downloads: bool = True


class ServeSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9696, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    reload_seconds: float = Field(default=30.0, gt=0, description="how often the champion alias is looked up")
    batch_limit: int = Field(default=10_000, ge=1, description="most rides one /predict/batch request may hold")
    body_timeout_seconds: float = Field(default=30.0, gt=0, description="time a client has to send a request body")
    header_timeout_seconds: float = Field(default=10.0, gt=0, description="time a client has to send a request's headers")
    keep_alive_seconds: float = Field(default=5.0, gt=0, description="time an idle connection is kept open")
    admin_token: SecretStr | None = Field(
        default=None, description="bearer token of /admin endpoints; required when serve.host is not loopback"
    )
    admin_token_file: Path | None = Field(default=None, description="a file holding serve.admin_token")


class MonitorSettings(Section):
    max_feature_psi: float = Field(default=0.2, gt=0, description="PSI of a feature beyond which it drifted")
    max_prediction_psi: float = Field(default=0.2, gt=0, description="PSI of the predictions beyond which they drifted")
    max_rmse_increase: float = Field(
        default=1.0, ge=0, description="minutes the month's RMSE may exceed the champion's registered RMSE"
    )


class StackSettings(Section):
    """`taxipipe stack`: the ports of its servers on 127.0.0.1 and how long to wait for them."""

    postgres_port: int = Field(default=5432, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    airflow_port: int = Field(default=8080, ge=1, le=65535)
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    dagster_port: int = Field(default=3000, ge=1, le=65535)
    airflow_parallelism: int = Field(default=4, ge=1, description="task slots of the LocalExecutor")
    start_timeout_seconds: float = Field(default=300, gt=0)
    project_dir: Path | None = Field(
        default=None, description="holds dags/ and prefect.yaml; None: the checkout of the package"
    )


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
        return init_settings, _FilteredEnvSource(settings_cls), _FileSource(settings_cls)


class _FilteredEnvSource(EnvSettingsSource):
    """TAXIPIPE_* variables, minus the ones that are not settings (`NOT_SETTINGS`); a name that
    is neither is refused, so a misspelt one is not ignored."""

    def __call__(self) -> dict[str, Any]:
        unknown = [_unknown_variable(name) for name in sorted(os.environ)
                   if name.upper().startswith(ENV_PREFIX) and not _names_a_setting(name)]
        if unknown:
            raise ConfigError(
                f"unknown environment variable{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
                f"a setting is TAXIPIPE_HOME or TAXIPIPE_SECTION__KEY (sections {', '.join(_sections())}), "
                f"and the other TAXIPIPE_ names are {', '.join(sorted(NOT_SETTINGS))}; fix the name or unset it")
        return {k: v for k, v in super().__call__().items() if k in Settings.model_fields}


def _sections() -> list[str]:
    """The settings' tables (data, model...): what TAXIPIPE_SECTION__KEY may name."""
    return [name for name, field in Settings.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, Section)]


def _names_a_setting(variable: str) -> bool:
    """Whether a TAXIPIPE_* variable names a setting (a key's validity is the model's to check)
    or is one of `NOT_SETTINGS`."""
    name = variable.upper()
    field, nested, _ = name.removeprefix(ENV_PREFIX).lower().partition("__")
    return name in NOT_SETTINGS or (field in _sections() if nested else field in Settings.model_fields)


def _unknown_variable(variable: str) -> str:
    """The variable's name, with the setting it probably meant (TAXIPIPE_DATA_YEAR: TAXIPIPE_DATA__YEAR)."""
    import difflib

    field, nested, key = variable.upper().removeprefix(ENV_PREFIX).lower().partition("__")
    head, _, tail = field.partition("_")
    if not nested and head in _sections() and tail:
        guess = f"{head}__{tail}"
    else:
        close = difflib.get_close_matches(field, list(Settings.model_fields), n=1)
        guess = f"{close[0]}{nested}{key}" if close else ""
    suggestion = f"{ENV_PREFIX}{guess.upper()}"
    return f"{variable} (did you mean {suggestion}?)" if guess and _names_a_setting(suggestion) else variable


#: The tables of the config file of the load in progress (per thread and task, see `load_settings`).
_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("taxipipe_config_file_values", default={})


class _FileSource(PydanticBaseSettingsSource):
    """The config file chosen for this load."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _FILE_VALUES.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get())


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


def load_settings(
    config_file: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build the settings: defaults < file (`config_file` or $TAXIPIPE_CONFIG) < env < overrides.

    `overrides` are nested tables like the file's, e.g. {"data": {"month": 2}}.
    """
    path = config_file or os.environ.get(CONFIG_ENV)
    token = _FILE_VALUES.set(read_config_file(Path(path)) if path else {})
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, path)) from None
    finally:
        _FILE_VALUES.reset(token)


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
        ("env", flatten(_FilteredEnvSource(Settings)())),
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
