"""The typed settings sections: one table of the config file each (data, model, mlflow...), their
defaults and the checks of their values."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, SerializeAsAny, field_validator, model_validator
from pydantic_core import PydanticCustomError

from taxipipe.errors import ConfigError
from taxipipe.models import KIND_NAMES
from taxipipe.models.base import KindParams

DEFAULT_URL_TEMPLATE = (
    "https://d37ci6vzurychx.cloudfront.net/trip-data/{color}_tripdata_{year}-{month:02d}.parquet"
)


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
    dask_scheduler: str = Field(default="", description="tcp://HOST:PORT (tls:// with dask_tls_dir); "
                                "empty: a LocalCluster")
    dask_tls_dir: Path | None = Field(default=None, description="ca.pem, client.pem and client-key.pem for a "
                                      "tls:// scheduler (a listening stack's HOME/stack/tls)")
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
                "(such as tcp://127.0.0.1:8786) or tls://HOST:PORT, or leave it empty for a local cluster")})
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
    """`taxipipe stack`: the ports of its servers, the address workers reach them on, and how long
    to wait for them."""

    listen: str = Field(
        default="", description="an IP address of this host where the servers workers reach also listen, "
                                "with credentials (docs/production.md); empty: 127.0.0.1 only"
    )
    postgres_port: int = Field(default=5432, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    airflow_port: int = Field(default=8080, ge=1, le=65535)
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    dagster_port: int = Field(default=3000, ge=1, le=65535)
    dask_port: int = Field(default=8786, ge=1, le=65535, description="the Dask scheduler's, with --listen")
    airflow_parallelism: int = Field(default=4, ge=1, description="task slots of the LocalExecutor")
    start_timeout_seconds: float = Field(default=300, gt=0)
    join_timeout_seconds: float = Field(
        default=300, gt=0, description="how long `stack join` tries to reach the servers before it gives up"
    )
    worker_concurrency: int = Field(default=2, ge=1, description="task slots of each worker `stack join` starts")
    project_dir: Path | None = Field(
        default=None, description="holds dags/ and prefect.yaml; None: the checkout of the package"
    )

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, address: str) -> str:
        import ipaddress

        if not address:
            return address
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            raise PydanticCustomError("sentence", "{sentence}", {"sentence": (
                f"stack.listen '{address}' is not an IP address: give one of this host's, such as 10.0.0.5 "
                "(the address workers on other hosts reach), or leave it empty")}) from None
