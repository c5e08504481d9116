"""Errors a user can cause: each carries one sentence that names the problem and the fix."""

import errno
from pathlib import Path


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


class SharedFileError(TaxipipeError):
    """A file a step reads is missing from the tracking server's artifact store, or is not the
    file the step that wrote it recorded."""


class StorageError(TaxipipeError):
    """A file could not be written: the disk is full, or the place is read-only."""


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_LOCKED_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL_SIGNS = ("No space left on device", "database or disk is full", "File too large", "Disk quota exceeded",
               "FileStream.Write incomplete")
_LOCKED_SIGNS = ("Read-only file system", "readonly database")
_MOVE_HOME = "or choose another home (--home or TAXIPIPE_HOME)"


def storage_error(exc: BaseException, where: object = "the home directory") -> StorageError | None:
    """The one-sentence StorageError a full disk or a read-only place raised as `exc`, or None.

    Looks through the exception's causes: MLflow, SQLAlchemy, pyarrow and XGBoost wrap the
    operating system's error in their own.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for error in chain:
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS | _LOCKED_ERRNOS:
            path = error.filename2 or error.filename  # a copy's or a move's second name is the one written
            if not path or (isinstance(where, Path) and not str(path).startswith(str(where))):
                path = where
            if error.errno in _FULL_ERRNOS:
                return StorageError(f"there is no room to write {path} ({error.strerror}); free space on that "
                                    f"disk {_MOVE_HOME}")
            return StorageError(f"{path} cannot be written ({error.strerror}); make it writable {_MOVE_HOME}")
    text = " ".join(str(error) for error in chain)
    full = next((sign for sign in _FULL_SIGNS if sign in text), None)
    if full:
        return StorageError(f"there is no room to write under {where} ({full}); free space on that disk {_MOVE_HOME}")
    locked = next((sign for sign in _LOCKED_SIGNS if sign in text), None)
    if locked:
        return StorageError(f"{where} cannot be written ({locked}); make it writable {_MOVE_HOME}")
    return None


#: Failures another attempt cannot fix: runners fail at once on these instead of retrying.
PERMANENT_ERRORS: tuple[type[TaxipipeError], ...] = (
    ConfigError, DataNotFoundError, SchemaError, CorruptDataError, DataQualityError, PipelineStateError,
    StorageError, SharedFileError,
)


class StepFailed(Exception):
    """A runner's step raised a `TaxipipeError`: the step's name and the user-facing reason.

    Runners raise it after printing the reason, so callers only set the exit status.
    """

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"task '{step}' failed: {reason}")
        self.step = step
        self.reason = reason


class ComputeError(TaxipipeError):
    """The compute engine (a Dask scheduler) could not be reached."""
