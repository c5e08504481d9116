"""Errors a user can cause: each carries one sentence that names the problem and the fix."""


class TaxipipeError(Exception):
    """Base of every error the CLI reports as one line and a non-zero exit."""


class ConfigError(TaxipipeError):
    """The configuration file, environment or flags hold an unknown key or a bad value."""


class DataNotFoundError(TaxipipeError):
    """The source has no file for the requested colour and month."""


class NetworkError(TaxipipeError):
    """The data source could not be reached."""


class CorruptDataError(TaxipipeError):
    """A file is not a readable parquet file (truncated or damaged)."""


class SchemaError(TaxipipeError):
    """A file lacks a required column or holds a type the pipeline cannot use."""


class DataQualityError(TaxipipeError):
    """The data broke one or more quality rules."""


class TrackingError(TaxipipeError):
    """The MLflow tracking server could not be reached."""


class PipelineStateError(TaxipipeError):
    """A step was asked to run before the steps it depends on."""


class UsageError(TaxipipeError):
    """A command was given an unknown target or options that do not fit together."""


class NoChampionError(TaxipipeError):
    """No registered model version carries the `champion` alias yet."""


class BusyError(TaxipipeError):
    """Another run holds the home directory's lock."""


class StackError(TaxipipeError):
    """A server of `taxipipe stack` cannot start: a port is taken, a program is missing..."""


#: Failures another attempt cannot fix: runners fail at once on these instead of retrying.
PERMANENT_ERRORS: tuple[type[TaxipipeError], ...] = (
    ConfigError, DataNotFoundError, SchemaError, CorruptDataError, DataQualityError, PipelineStateError,
)


class StepFailed(Exception):
    """A runner's step raised a `TaxipipeError`: the step's name and the user-facing reason.

    Runners raise it after printing the reason, so callers only set the exit status.
    """

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"task '{step}' failed: {reason}")
        self.step = step
        self.reason = reason
