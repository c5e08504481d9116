"""The promotion lock: the registry-wide lock under which the `champion` alias of a model moves."""

from __future__ import annotations

from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Iterator

from taxipipe.errors import TrackingError
from taxipipe.tracking import CHAMPION, owner_gone, owner_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: How long a promotion lock is trusted, whoever holds it, before it is broken.
PROMOTION_LEASE_SECONDS = 600.0


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
