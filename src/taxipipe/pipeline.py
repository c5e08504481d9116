"""The pipeline declared once, as data: steps, their order, files and config keys.

Runners read this graph; they decide when and where each step runs, never what it does.
A step marked `per_month` becomes one node per month the run reads (`Settings.months`):
`graph(settings)` expands `extract` into `extract[2021-01]`, `extract[2021-02]`, and the
steps downstream of it depend on all of them. Engines with their own fan-out (Airflow's
mapped tasks, Prefect's futures, Dagster's dynamic outputs) map the step over the months
instead; the make and simple runners run the expanded nodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from taxipipe import console, steps
from taxipipe.config import Settings
from taxipipe.errors import PipelineStateError, TaxipipeError, TrackingError, storage_error
from taxipipe.safety.interrupts import raise_if_signalled
from taxipipe.partition import Partition
from taxipipe.steps import Record, StepContext, Upstream

PathsOf = Callable[[StepContext], list[Path]]
#: Called after every step that succeeded: (node name, context, upstream records, record).
AfterStep = Callable[[str, StepContext, Upstream, Record], None]


@dataclass(frozen=True)
class Step:
    """One node of the graph (a per-month step's node carries its `month`)."""

    name: str
    run: Callable[[StepContext, Upstream], Record]
    upstream: tuple[str, ...]
    reads: PathsOf
    writes: PathsOf
    config_keys: tuple[str, ...]
    description: str
    per_month: bool = False
    month: Partition | None = None

    @property
    def step_name(self) -> str:
        """The declared step's name (`extract` for the node `extract[2021-01]`)."""
        return self.name.split("[")[0]


def _downloads(ctx: StepContext) -> list[Path]:
    return [ctx.layout.download(month) for month in ctx.settings.months]


def _clean(ctx: StepContext) -> list[Path]:
    return [ctx.layout.train_clean, ctx.layout.validation_clean]


def _features(ctx: StepContext) -> list[Path]:
    return [ctx.layout.encoder, ctx.layout.train_features, ctx.layout.validation_features]


def _none(ctx: StepContext) -> list[Path]:
    return []


COMPUTE_KEYS = ("compute.engine", "compute.external_memory", "compute.memory_gb")
REGISTRY_KEYS = ("mlflow.tracking_uri", "mlflow.model_name")

STEPS: tuple[Step, ...] = (
    Step("extract", steps.extract, (), _none, _downloads, ("data.color", "data.url_template"),
         "download one month the run reads (one node per month)", per_month=True),
    Step("validate_data", steps.validate_data, ("extract",), _downloads, _none,
         ("data.color", "validation.min_positive_duration_share", "validation.max_invalid_row_share"),
         "check schema and quality rules"),
    Step("transform", steps.transform, ("validate_data",), _downloads, _clean, ("data.color", "validation.min_rows"),
         "duration in minutes, keep 1..60"),
    Step("features", steps.features, ("transform",), _clean, _features, ("model.features", *COMPUTE_KEYS),
         "fit the encoder, encode both months"),
    Step("train", steps.train, ("features",), _features, lambda ctx: [ctx.layout.model],
         ("model.kind", "model.params", "model.early_stopping_rounds", "mlflow.experiment_name",
          *REGISTRY_KEYS[:1], *COMPUTE_KEYS, "compute.dask_scheduler"),
         "train the model kind, track the run in MLflow"),
    Step("validate_model", steps.validate_model, ("train",), lambda ctx: [ctx.layout.validation_clean],
         _none, ("validation.min_rmse", "validation.max_rmse", "validation.min_improvement",
                 *REGISTRY_KEYS),
         "gate on RMSE bounds and the champion"),
    Step("save", steps.save, ("train", "validate_model"),
         lambda ctx: [ctx.layout.encoder, ctx.layout.model, ctx.layout.validation_clean], _none, (),
         "log the pyfunc model and a plot"),
    Step("deploy", steps.deploy, ("validate_model", "save"), lambda ctx: [ctx.layout.validation_clean],
         lambda ctx: [ctx.layout.deployment_record], REGISTRY_KEYS,
         "register the version, move 'champion' if allowed"),
    Step("cleanup", steps.cleanup, ("deploy",), _none, _none, ("artifacts.keep_downloads",),
         "remove the partition's intermediates"),
)

STEP_NAMES = tuple(step.name for step in STEPS)
BY_NAME = {step.name: step for step in STEPS}


def node_name(step: str, month: Partition) -> str:
    """`extract[2021-01]`: the node of a per-month step for one month."""
    return f"{step}[{month.label}]"


def month_node(step: str, month: Partition) -> Step:
    """The node of per-month step `step` that handles `month`."""
    declared = BY_NAME[step]

    def one(ctx: StepContext) -> list[Path]:
        return [ctx.layout.download(month)]

    return replace(declared, name=node_name(step, month), month=month,
                   reads=one if declared.reads is not _none else _none,
                   writes=one if declared.writes is not _none else _none)


def graph(settings: Settings) -> tuple[Step, ...]:
    """The nodes of a run, in run order: every per-month step expanded over `settings.months`."""
    expanded: dict[str, tuple[str, ...]] = {}
    nodes: list[Step] = []
    for step in STEPS:
        upstream = tuple(name for parent in step.upstream for name in expanded.get(parent, (parent,)))
        if step.per_month:
            months = [month_node(step.name, month) for month in settings.months]
            expanded[step.name] = tuple(node.name for node in months)
            nodes += [replace(node, upstream=upstream) for node in months]
        else:
            nodes.append(replace(step, upstream=upstream))
    return tuple(nodes)


def edges(nodes: Iterable[Step] = STEPS) -> dict[str, set[str]]:
    """Each node's upstream nodes: what every engine's wiring must equal (see the tests)."""
    return {node.name: set(node.upstream) for node in nodes}


def chain(target: str, nodes: Sequence[Step] = STEPS) -> list[Step]:
    """The nodes of `target` (a node, or a step and all its nodes) and all they depend on."""
    by_name = {node.name: node for node in nodes}
    pending = [node.name for node in nodes if target in (node.name, node.step_name)]
    if not pending:
        raise KeyError(target)
    needed: set[str] = set()
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(by_name[name].upstream)
    return [node for node in nodes if node.name in needed]


def per_month_records(step: str, records: Iterable[Record]) -> dict[str, Record]:
    """The records of a step mapped over months, keyed by node name (as `graph` names them)."""
    return {f"{step}[{record['month']}]": record for record in records}


def by_node(records: Mapping[str, Record | list[Record]]) -> dict[str, Record]:
    """Records by step name, a per-month step's as a list, keyed by node name instead."""
    flat: dict[str, Record] = {}
    for name, value in records.items():
        flat.update(per_month_records(name, value) if isinstance(value, list) else {name: value})
    return flat


def record_step_in_mlflow(node: str, ctx: StepContext, upstream: Upstream, record: Record) -> None:
    """After-step hook of every runner: once an MLflow run exists (train on), log step times
    and this process's peak memory.

    train logs the times of itself and every step before it; each later step its own.
    """
    from taxipipe import tracking

    run_id = record.get("run_id") or next(
        (previous["run_id"] for previous in upstream.values() if "run_id" in previous), None)
    if run_id is None:
        return
    step = node.split("[")[0]
    logged = dict(record["timings"]) if step == "train" else {step: record["seconds"]}
    client = tracking.client(ctx.settings)
    tracking.log_timings(client, run_id, logged)
    tracking.log_peak_memory(client, run_id, step)


def _after_step_hooks() -> tuple[AfterStep, ...]:
    return (record_step_in_mlflow,)


def run_step(step: Step, ctx: StepContext, upstream: Upstream,
             hooks: Sequence[AfterStep] | None = None) -> Record:
    """Run one node, time it, then call the after-step hooks (MLflow step times by default).

    The record gains `seconds`, `finished_at` (epoch seconds) and `timings`: the times of this
    step and of every step upstream of it, by step name (a per-month step counts its slowest
    month, as the months may run at once). A hook that fails after the step succeeded is a warning: the step did
    its work, so it is not reported as failed. A full disk or a read-only home becomes a StorageError of one sentence,
    an MLflow failure a TrackingError. A process's first step probes the tracking server, so
    an unreachable one fails the run before its downloads, under every runner.

    When tracking is a server, the step's files move through its artifact store, so the steps
    of a run may run on hosts that share no disk: what the step reads is fetched first (checked
    against the digests the upstream records carry), what it writes is uploaded after, and the
    record gains `shared_files` and `transfers` (`tracking.shared_files`).
    """
    from taxipipe import tracking

    missing = [name for name in step.upstream
               if name not in upstream and not any(key.startswith(f"{name}[") for key in upstream)]
    if missing:
        raise PipelineStateError(f"step '{step.name}' needs the record of step '{missing[0]}'; run it first")
    if step.month is not None:
        ctx = replace(ctx, month=step.month)
    raise_if_signalled()
    try:
        tracking.check_reachable(ctx.settings)
        return _timed(step, ctx, upstream, hooks)
    except TaxipipeError:
        raise
    except Exception as exc:
        problem = storage_error(exc, ctx.settings.home) or _tracking_error(exc, step, ctx)
        if problem is None:
            raise
        raise problem from exc


def _tracking_error(exc: Exception, step: Step, ctx: StepContext) -> TrackingError | None:
    """An error MLflow raised (a store or server that failed) as one retryable sentence."""
    if type(exc).__name__ != "MlflowException":
        return None
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return TrackingError(f"MLflow failed during '{step.name}' ({reason}); check the tracking store "
                         f"{ctx.settings.tracking_uri()} and run again")


def _timed(step: Step, ctx: StepContext, upstream: Upstream, hooks: Sequence[AfterStep] | None) -> Record:
    shared = _bring_reads(step, ctx, upstream)
    started = time.perf_counter()
    record = step.run(ctx, upstream)
    record["seconds"] = round(time.perf_counter() - started, 3)
    if shared is not None:
        _share_writes(step, ctx, shared, record)
    record["finished_at"] = round(time.time(), 3)
    timings: dict[str, float] = {}
    for previous in upstream.values():
        for name, seconds in previous.get("timings", {}).items():
            timings[name] = max(seconds, timings.get(name, 0.0))
    timings[step.step_name] = record["seconds"]
    record["timings"] = timings
    for hook in _after_step_hooks() if hooks is None else hooks:
        try:
            hook(step.name, ctx, upstream, record)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            console.say(f"⚠️  '{step.name}' succeeded, but recording its time in MLflow failed ({reason})")
    return record


def _bring_reads(step: Step, ctx: StepContext, upstream: Upstream) -> Record | None:
    """Before a step, when tracking is a server: put every file the step reads into this home.

    A missing download comes again from its source (`steps.extract_month`); any other file the
    upstream records name comes from the server's artifact store unless the home holds it
    already (`tracking.shared_files`). Returns the upstream records' shared files and what moved,
    or None when tracking is embedded: the home then holds every file and nothing is shared.
    """
    from taxipipe.tracking import shared_files

    uri, home = ctx.settings.tracking_uri(), ctx.settings.home
    if shared_files.server(uri) is None:
        return None
    known = shared_files.manifest_of(upstream.values())
    downloads = _downloads_by_path(ctx)
    moved: dict[str, dict[str, int]] = {"downloaded": {}, "fetched": {}}
    for path in step.reads(ctx):
        name = shared_files.key(home, path)
        if path in downloads and not path.exists():
            moved["downloaded"][name] = steps.extract_month(ctx, downloads[path])["bytes"]
        elif name in known and shared_files.fetch(uri, path, known[name]):
            moved["fetched"][name] = known[name]["bytes"]
    return {"shared_files": known, "transfers": moved}


def _share_writes(step: Step, ctx: StepContext, shared: Record, record: Record) -> None:
    """After a step, when tracking is a server: upload what it wrote (downloads excepted: each
    host fetches those from their source) and record every shared file so far with its digest."""
    from taxipipe.tracking import shared_files

    downloads = _downloads_by_path(ctx)
    sent = shared_files.upload(ctx.settings.tracking_uri(), ctx.settings.home,
                               [path for path in step.writes(ctx) if path not in downloads], ctx.run_key)
    record["shared_files"] = {**shared["shared_files"], **sent}
    record["transfers"] = {**shared["transfers"], "uploaded": {name: file["bytes"] for name, file in sent.items()}}


def _downloads_by_path(ctx: StepContext) -> dict[Path, Partition]:
    """The run's downloads and their months: files each host fetches from the source itself."""
    return {ctx.layout.download(month): month for month in ctx.settings.months}
