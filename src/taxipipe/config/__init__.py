"""Settings: defaults < config file < TAXIPIPE_* environment < command-line flags.

One typed object (`Settings`) holds every knob; each part of the pipeline receives it
explicitly. `load_settings` builds it and `describe_settings` says where each value came from.
The sections are in `sections`, the file and environment sources in `sources`, the object and
its loading in `loading`; every public name is importable from here.
"""

from taxipipe.config.loading import Settings, default_value, describe_settings, flatten, get_value, load_settings
from taxipipe.config.sections import (
    DEFAULT_URL_TEMPLATE,
    ArtifactSettings,
    ComputeSettings,
    DataSettings,
    MlflowSettings,
    ModelSettings,
    MonitorSettings,
    Section,
    ServeSettings,
    StackSettings,
    ValidationSettings,
)
from taxipipe.config.sources import (
    CONFIG_ENV,
    ENV_PREFIX,
    NOT_SETTINGS,
    SERVE_SETTINGS_ENV,
    SERVE_SHARED_ENV,
    merge,
    read_config_file,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_URL_TEMPLATE",
    "ENV_PREFIX",
    "NOT_SETTINGS",
    "SERVE_SETTINGS_ENV",
    "SERVE_SHARED_ENV",
    "ArtifactSettings",
    "ComputeSettings",
    "DataSettings",
    "MlflowSettings",
    "ModelSettings",
    "MonitorSettings",
    "Section",
    "ServeSettings",
    "Settings",
    "StackSettings",
    "ValidationSettings",
    "default_value",
    "describe_settings",
    "flatten",
    "get_value",
    "load_settings",
    "merge",
    "read_config_file",
]
