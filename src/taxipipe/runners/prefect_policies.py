"""When the Prefect flow reuses a step's result, and when it tries a failed step again.

A step's cache key is built from what the step declares in `taxipipe.pipeline`: the values
of its config keys, the small records of its upstream steps, the size and mtime of the files
it reads and the source of its step function. It never hashes data frames or the whole
settings, so a new `max_depth` invalidates train and what follows, not transform.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from prefect.cache_policies import CachePolicy
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel

from taxipipe.config import Settings, get_value
from taxipipe.errors import PERMANENT_ERRORS
from taxipipe.layout import Layout
from taxipipe.pipeline import BY_NAME
from taxipipe.steps import VOLATILE_FIELDS

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun
    from prefect.context import TaskRunContext
    from prefect.states import State
    from prefect.tasks import Task


def stable(value: Any) -> Any:
    """`value` without its volatile record fields, at any depth."""
    if isinstance(value, Mapping):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE_FIELDS}
    if isinstance(value, (list, tuple)):
        return [stable(v) for v in value]
    return value


def fingerprint(step_name: str, settings: Settings, upstream: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a step's output depends on, as a small JSON-able document."""
    step = BY_NAME[step_name]
    config = {}
    for key in step.config_keys:
        value = get_value(settings, key)
        config[key] = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    files = {}
    for path in step.reads(Layout(settings.home, settings.partition)):
        info = path.stat() if path.exists() else None
        files[str(path)] = [info.st_size, info.st_mtime_ns] if info else None
    return {"step": step.name, "partition": settings.partition.key, "config": config,
            "upstream": stable(upstream), "files": files, "source": inspect.getsource(step.run)}


@dataclass
class StepInputs(CachePolicy):
    """Cache key of a task named after a step, called as `task(settings, **upstream_records)`."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        upstream = {name: value for name, value in inputs.items() if name != "settings"}
        document = fingerprint(task_ctx.task.name, inputs["settings"], upstream)
        return hash_objects(document, raise_on_failure=True)


def retryable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry unless the task failed with an error that a new attempt cannot fix."""
    return not isinstance(state.result(raise_on_failure=False), PERMANENT_ERRORS)
