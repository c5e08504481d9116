"""The model registry: registered versions, the `champion` alias and the promotion lock."""

from __future__ import annotations

import logging
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Iterator

from taxipipe.errors import TrackingError
from taxipipe.tracking.runs import owner_gone, owner_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
logger = logging.getLogger(__name__)
#: Model-version tag saying what deploy made of it: pending (being promoted), champion, rejected,
#: interrupted (registered, but the process died before it could become champion), or replaced.
PROMOTION_TAG, PENDING, INTERRUPTED = "promotion", "pending", "interrupted before it became champion"
#: The start of the promotion tag of a former champion: `replaced by v7`.
REPLACED = "replaced by"
#: Model-version tag: the months (partition keys, comma-separated) the version trained on.
TRAINED_ON_TAG = "trained_on"
#: How long a promotion lock is trusted, whoever holds it, before it is broken.
PROMOTION_LEASE_SECONDS = 600.0


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


def trained_on(mlflow_client: MlflowClient, version: Any) -> tuple[str, ...]:
    """The months (partition keys) a registered version trained on.

    Versions registered before the tag existed are read from their run's parameters.
    """
    if version.tags.get(TRAINED_ON_TAG):
        return tuple(version.tags[TRAINED_ON_TAG].split(","))
    from taxipipe.partition import Partition
    from taxipipe.window import training_window

    params = mlflow_client.get_run(version.run_id).data.params
    last = (Partition.parse(params["color"], params["window_last"]) if "window_last" in params
            else Partition(params["color"], int(params["year"]), int(params["month"])))
    return tuple(month.key for month in training_window(last, int(params.get("train_months", 1))))


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


@contextmanager
def promotion_lock(mlflow_client: MlflowClient, model_name: str, owner: str,
                   wait_seconds: float = 900.0) -> Iterator[None]:
    """Hold the registry-wide lock under which the `champion` alias of `model_name` moves.

    Runs that share a store but not a home (workers on several machines) each judge against
    the champion and then move the alias; holding this lock from the second lookup to the move
    makes that a compare-and-set. The lock is a registered model, `{model_name}.promotion-lock`:
    creating one is atomic in every store MLflow has. A lock is broken, saying why, when it is
    older than `PROMOTION_LEASE_SECONDS` (whoever holds it), when its time is not readable, or
    when its owner on this host is gone (`owner_gone`). On leaving, the lock is deleted only if
    it is still this one (a lock broken for its age may be another process's by then).
    """
    import socket
    import time

    from mlflow.exceptions import MlflowException

    from taxipipe import console

    name = f"{model_name}.promotion-lock"
    tags = {**owner_tags(), "owner": owner, "acquired_at": str(time.time())}
    deadline = time.monotonic() + wait_seconds
    announced = False
    while True:
        try:
            mlflow_client.create_registered_model(
                name, tags=tags, description=f"held by taxipipe while it moves the '{CHAMPION}' alias of {model_name}")
            break
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        holder = _lock_holder(mlflow_client, name)
        stale = _stale(holder, socket.gethostname()) if holder is not None else None
        if stale is not None:
            console.say(f"⚠️  the promotion lock of {model_name} ({_describe(holder)}) is stale: {stale}; breaking it")
            with suppress(MlflowException):
                mlflow_client.delete_registered_model(name)
            continue
        if time.monotonic() > deadline:
            raise TrackingError(f"another taxipipe run ({_describe(holder)}) has held the promotion lock of "
                                f"{model_name} for over {wait_seconds:.0f} s; nothing was promoted, run again later")
        if not announced:
            console.say(f"⏳ Waiting for another taxipipe run ({_describe(holder)}) to finish promoting {model_name}")
            announced = True
        time.sleep(0.2)
    try:
        yield
    finally:
        with suppress(MlflowException):
            if _lock_holder(mlflow_client, name) == tags:
                mlflow_client.delete_registered_model(name)


def _lock_holder(mlflow_client: MlflowClient, name: str) -> dict[str, str] | None:
    from mlflow.exceptions import MlflowException

    try:
        return dict(mlflow_client.get_registered_model(name).tags)
    except MlflowException:
        return None


def _stale(holder: dict[str, str], host: str) -> str | None:
    """Why the promotion lock `holder` describes may be broken (None: it holds)."""
    import math
    import time

    taken = holder.get("acquired_at", "")
    try:
        age = time.time() - float(taken)
    except ValueError:
        age = math.nan
    if not math.isfinite(age) or age < -PROMOTION_LEASE_SECONDS:
        return f"its acquired_at tag {taken!r} is not a time"
    if age > PROMOTION_LEASE_SECONDS:
        return f"it was taken {age:.0f} s ago, over the {PROMOTION_LEASE_SECONDS:.0f} s a promotion may take"
    return owner_gone(holder) if holder.get("taxipipe.host") == host else None


def _describe(holder: dict[str, str] | None) -> str:
    if not holder:
        return "unknown"
    return f"{holder.get('owner', '?')}, pid {holder.get('taxipipe.pid', '?')} on {holder.get('taxipipe.host', '?')}"


def promote(mlflow_client: MlflowClient, model_name: str, version: str) -> None:
    """Point `champion` at `version`, the last registry write a promotion needs, then tag it
    champion and the champion it replaced `replaced by vN`.

    First the versions an interrupted deploy left pending are settled: the one the alias names
    (its deploy was killed after the alias moved) is tagged champion, the others interrupted.
    The version keeps its pending tag until the alias has moved, so a kill before the move
    leaves no version tagged champion that never was; a tag this process could not write after
    the move is settled the same way by the next promotion.
    """
    from mlflow.exceptions import MlflowException

    current = champion_version(mlflow_client, model_name)
    for stale in mlflow_client.search_model_versions(
            f"name = '{model_name}' and tags.{PROMOTION_TAG} = '{PENDING}'"):
        if str(stale.version) != str(version):
            became = current is not None and str(current.version) == str(stale.version)
            mlflow_client.set_model_version_tag(model_name, stale.version, PROMOTION_TAG,
                                                CHAMPION if became else INTERRUPTED)
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, version)
    with suppress(MlflowException):
        mlflow_client.set_model_version_tag(model_name, version, PROMOTION_TAG, CHAMPION)
        if current is not None and str(current.version) != str(version):
            mlflow_client.set_model_version_tag(model_name, current.version, PROMOTION_TAG,
                                                f"{REPLACED} v{version}")


def model_description(model_name: str) -> str:
    """What the registered model is and how its champion is chosen (the registry's description)."""
    return (f"NYC taxi trip duration in minutes (rides of 1 to 60 minutes), predicted from the pickup and "
            f"drop-off zones and the trip distance. Every run registers a version; use "
            f"`models:/{model_name}@{CHAMPION}`. A version takes the '{CHAMPION}' alias only when its RMSE on "
            f"the month after its training months is within the configured bounds and lower than the "
            f"champion's on that month (docs/champion.md). Each version's `{PROMOTION_TAG}` tag says what it "
            f"became: {CHAMPION}, rejected, or {REPLACED} a later version.")


def register(mlflow_client: MlflowClient, name: str, model_uri: str, run_id: str, model_id: str | None,
             tags: dict[str, str]) -> str:
    """A new version of registered model `name` (created on first use, described); its version number.

    The client's calls print nothing, unlike `mlflow.register_model`; the news is logged (-v).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        mlflow_client.create_registered_model(name, description=model_description(name))
        logger.debug(f"registered model '{name}'")
    except MlflowException as exc:
        if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise
        if not mlflow_client.get_registered_model(name).description:
            mlflow_client.update_registered_model(name, description=model_description(name))
    version = mlflow_client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id).version
    logger.debug(f"created version {version} of model '{name}'")
    return version
