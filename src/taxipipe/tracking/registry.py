"""The model registry's plain calls: the version behind the `champion` alias, the version a run
registered, and registering a new one. How the champion is chosen: `taxipipe.champion`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from taxipipe.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
logger = logging.getLogger(__name__)


def champion_version(mlflow_client: MlflowClient, model_name: str) -> Any | None:
    """The registered version behind the `champion` alias; None only when there is none.

    "No such model" and "no such alias" mean no champion yet. Any other answer (a server
    error, a store that cannot be read) raises TrackingError: the gate must not treat the
    new model as the first one just because the registry did not answer.
    """
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        message = str(exc).lower()
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
                exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message):
            return None
        raise TrackingError(
            f"cannot look up the '{CHAMPION}' of model {model_name} in the registry "
            f"({str(exc).splitlines()[0][:200]}); nothing was promoted, run again when the registry answers"
        ) from None


def version_of_run(mlflow_client: MlflowClient, model_name: str, run_id: str) -> Any | None:
    """The version of `model_name` already registered from `run_id` (a retried deploy), if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return min(found, key=lambda version: int(version.version)) if found else None


def register(mlflow_client: MlflowClient, name: str, model_uri: str, run_id: str, model_id: str | None,
             tags: dict[str, str], description: str) -> str:
    """A new version of registered model `name` (created on first use with `description`, which
    is also given to one that has none); its version number.

    The client's calls print nothing, unlike `mlflow.register_model`; the news is logged (-v).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        mlflow_client.create_registered_model(name, description=description)
        logger.debug(f"registered model '{name}'")
    except MlflowException as exc:
        if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise
        if not mlflow_client.get_registered_model(name).description:
            mlflow_client.update_registered_model(name, description=description)
    version = mlflow_client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id).version
    logger.debug(f"created version {version} of model '{name}'")
    return version
