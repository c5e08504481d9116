"""When the Prefect flow reuses a step's result, and when it tries a failed step again.

A step's cache key is the digest of its fingerprint (`taxipipe.fingerprint`), the rule the
make runner uses too: the values of the config keys the step declares, the content of the
files it reads, the code of the step and the helpers it uses, and the records of its
upstream steps. It never hashes data frames or the whole settings, so a new `max_depth`
invalidates train and what follows, not transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect.cache_policies import CachePolicy

from taxipipe.errors import PERMANENT_ERRORS
from taxipipe.fingerprint import cache_key

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun
    from prefect.context import TaskRunContext
    from prefect.states import State
    from prefect.tasks import Task


@dataclass
class StepInputs(CachePolicy):
    """Cache key of a task named after a step, called as `task(settings, **upstream_records)`."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        upstream = {name: value for name, value in inputs.items() if name != "settings"}
        return cache_key(task_ctx.task.name, inputs["settings"], upstream)


def retryable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry unless the task failed with an error that a new attempt cannot fix."""
    return not isinstance(state.result(raise_on_failure=False), PERMANENT_ERRORS)
