"""The train step: the configured model kind trained inside one MLflow run."""

from __future__ import annotations

from typing import TypedDict

from taxipipe.safety.atomic import atomic_path
from taxipipe.steps.context import StepContext, StepRecord, Upstream
from taxipipe.window import window_key, window_label


class KindMetrics(TypedDict, total=False):
    """The metrics of the model kind and compute mode: XGBoost's best round, external memory's
    row groups, the Dask workers."""

    best_iteration: int
    boosted_rounds: int
    row_groups: int
    dask_workers: int
    dask_workers_peak_rss_mb: float


class TrainRecord(StepRecord, KindMetrics):
    """The MLflow run, the RMSE on the validation month, the model file and what it trained on."""

    run_id: str
    experiment_id: str
    rmse: float
    kind: str
    model: str
    compute: str
    window: str
    rows_per_month: dict[str, int]


def train(ctx: StepContext, upstream: Upstream) -> TrainRecord:
    """Train the configured model kind inside one MLflow run that records everything.

    The run exists before training starts, so its duration is the training's; for kinds that
    train in rounds progress is shown while they run, and under -v every 10th round's score
    is logged to the run live. The window trains in memory, in external memory or on Dask
    (`taxipipe.compute`), as the features record says; the run records which, the window's
    first and last month and the rides of each month.
    """
    from taxipipe import compute, console, tracking
    from taxipipe.peak_memory import peak_rss_bytes
    from taxipipe.compute.stream import month_counts
    from taxipipe.features import Encoder
    from taxipipe.models.base import rmse
    from taxipipe.models.registry import get_kind

    settings, layout, mode = ctx.settings, ctx.layout, upstream["features"]["compute"]
    kind = get_kind(settings.model.kind)
    encoder = Encoder.load(layout.encoder)
    client = tracking.client(settings)
    experiment = tracking.experiment_id(settings, client, ctx.runner)
    partition, window = settings.partition, layout.window
    tags = {"runner": ctx.runner, "partition": partition.key, "feature_mode": encoder.mode,
            "model_kind": kind.name, "validation_partition": layout.validation_partition.key,
            "window": window_key(window), "compute": mode, **ctx.tags}
    commit = tracking.git_commit()
    if commit:
        tags["git_commit"] = commit
    tracking.fail_abandoned_runs(client, experiment, partition.key, ctx.runner)
    run = client.create_run(experiment, tags={**tags, **tracking.owner_tags()},
                            run_name=f"{ctx.runner}-{partition.color}-{window_label(window)}")
    run_id = run.info.run_id
    params = {"model_kind": kind.name, **kind.log_params(settings.model),
              "feature_mode": encoder.mode, "preset": settings.model.preset,
              "color": partition.color, "year": partition.year, "month": partition.month,
              "train_months": len(window), "window_first": window[0].label, "window_last": window[-1].label,
              "compute": mode}
    tracking.log_values(client, run_id, params=params)
    with tracking.failed_on_error(client, run_id):
        tracking.log_datasets(client, run_id, settings)

    def live(done: int, score: float) -> None:
        console.LOGGER.debug(f"   round {done}: validation RMSE {score:.4f}")
        client.log_metric(run_id, "validation_rmse", score, step=done)

    callbacks = []
    if kind.rounds is not None and not console.quiet():
        from taxipipe.progress import TrainingProgress

        callbacks.append(TrainingProgress(kind.rounds(settings.model), on_round=live if console.verbose() else None))
    try:
        trained = compute.train(settings, mode, encoder, layout.train_features, layout.validation_features,
                                layout.xgboost_cache, callbacks)
        fit = trained.fit
        score = rmse(trained.target, fit.predictions)
        with atomic_path(layout.model) as tmp:
            fit.model.save(tmp)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    months = month_counts(layout.train_clean) if layout.train_clean.exists() else {}
    with tracking.failed_on_error(client, run_id):
        tracking.log_values(client, run_id, metrics={
            "rmse": score, "train_rows": trained.train_rows, "validation_rows": len(trained.target),
            "features": len(encoder.feature_names), "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
            **fit.metrics, **{f"train_rows.{label}": counts["rows"] for label, counts in months.items()},
        })
        tracking.describe_run(client, run_id, (
            f"{kind.name} trained on {partition.color} {window_label(window)} ({trained.train_rows:,} rides), "
            f"scored on {partition.color} {layout.validation_partition.label} ({len(trained.target):,} rides): "
            f"RMSE {score:.4f}. Compute {mode}, runner {ctx.runner}."))
    client.set_terminated(run_id)
    return {"run_id": run_id, "experiment_id": experiment, "rmse": score, "kind": kind.name,
            **fit.metrics, "model": str(layout.model), "compute": mode, "window": window_label(window),
            "rows_per_month": {label: counts["rows"] for label, counts in months.items()},
            "summary": f"{kind.name} RMSE {score:.4f} on {layout.validation_partition.label}, trained on "
                       f"{window_label(window)} ({mode}; MLflow run {run_id})"}
