"""The steps after training: validate_model (the champion gate), save, deploy and cleanup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taxipipe.champion import Deployment, Judgement
from taxipipe.layout import remove
from taxipipe.safety.home_lock import hold_home
from taxipipe.steps.context import StepContext, StepRecord, Upstream


class VerdictRecord(StepRecord, Judgement):
    """The gate's verdict on the run's model, and the champion it was judged against."""


class SaveRecord(StepRecord):
    """The pyfunc model logged to the run."""

    run_id: str
    model_uri: str
    model_id: str


class DeployRecord(StepRecord, Deployment):
    """The deployment record (`record`, the file) as deploy wrote it: the registered version,
    whether it is champion now, and why."""

    record: str


class CleanupRecord(StepRecord):
    """The files cleanup removed and the bytes they held, and what it removed from the tracking
    server's artifact store."""

    removed: list[str]
    bytes_freed: int
    removed_remote: list[str]


def validate_model(ctx: StepContext, upstream: Upstream) -> VerdictRecord:
    """Judge the model against the champion (`taxipipe.champion`); the verdict is logged on the run."""
    from taxipipe import champion, tracking

    trained = upstream["train"]
    verdict = champion.judge(tracking.client(ctx.settings), ctx.settings, ctx.layout.validation_clean,
                             trained["run_id"], trained["rmse"])
    return {**verdict, "summary": ("promotable: " if verdict["promotable"] else "not promotable: ") + verdict["reason"]}


def save(ctx: StepContext, upstream: Upstream) -> SaveRecord:
    """Log the pyfunc model (encoder + trained model) and a predicted-vs-actual plot to the run."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd

    import taxipipe
    from taxipipe import tracking
    from taxipipe.features import MODEL_COLUMNS, TARGET
    from taxipipe.pyfunc import TripDurationModel, signature

    trained = upstream["train"]
    run_id = trained["run_id"]
    layout = ctx.layout
    tracking.client(ctx.settings)
    rides = pd.read_parquet(layout.validation_clean)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TripDurationModel(),
            artifacts={"encoder": str(layout.encoder), "model": str(layout.model)},
            model_config={"kind": trained["kind"]},
            code_paths=[str(Path(taxipipe.__file__).parent)],
            pip_requirements=tracking.pip_requirements(),
            signature=signature(),
            input_example=rides[MODEL_COLUMNS].head(2).astype("float64"),
        )
        model = mlflow.pyfunc.load_model(info.model_uri, suppress_warnings=True)
        sample = rides.sample(n=min(5000, len(rides)), random_state=0)
        predictions = model.predict(sample[MODEL_COLUMNS])
        title = (f"{ctx.settings.data.color} {layout.validation_partition.label}: {trained['kind']} trained on "
                 f"{trained['window']}, RMSE {trained['rmse']:.4f}")
        mlflow.log_figure(_prediction_plot(sample[TARGET], predictions, title), "plots/predicted_vs_actual.png",
                          save_kwargs={"metadata": {"Title": title}})
    return {"run_id": run_id, "model_uri": info.model_uri, "model_id": info.model_id,
            "summary": f"model logged as {info.model_uri}"}


def _prediction_plot(actual: Any, predicted: Any, title: str) -> Any:
    """Predicted against actual minutes of a sample of rides; the title (also the PNG's) names the
    months and the RMSE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 6))
    axes.scatter(actual, predicted, s=3, alpha=0.3)
    axes.plot([0, 60], [0, 60], color="black", linewidth=1)
    axes.set(xlabel="actual minutes", ylabel="predicted minutes", title=f"Predicted vs actual duration\n{title}",
             xlim=(0, 60), ylim=(0, 60))
    plt.close(figure)
    return figure


def deploy(ctx: StepContext, upstream: Upstream) -> DeployRecord:
    """Register the model version with the gate's verdict; move `champion` only if it still holds
    against the champion of that moment (`taxipipe.champion.deploy`)."""
    from taxipipe import champion, tracking

    saved = upstream["save"]
    record = champion.deploy(tracking.client(ctx.settings), ctx.settings, upstream["validate_model"],
                             run_id=saved["run_id"], model_uri=saved["model_uri"], model_id=saved["model_id"],
                             rides=ctx.layout.validation_clean, record=ctx.layout.deployment_record, runner=ctx.runner)
    version, reason = record["version"], record["reason"]
    outcome = (f"version {version} is now '{tracking.CHAMPION}' ({reason})" if record["champion"]
               else f"version {version} registered; champion unchanged: {reason}")
    return {**record, "record": str(ctx.layout.deployment_record), "summary": outcome}


def cleanup(ctx: StepContext, upstream: Upstream) -> CleanupRecord:
    """Remove the partition's intermediates (and its downloads if asked); report what went.

    Waits for the home's run lock, so it never deletes what a run holding it is using. When
    tracking is a server, the files the run shared through its artifact store go too (the
    intermediates and the deployment record, whose verdict the registered version's tags keep),
    with those of earlier runs whose records it reused; another run's files stay.
    """
    from taxipipe.tracking.shared_files import manifest_of, remove as remove_shared

    layout = ctx.layout
    remote = remove_shared(ctx.settings.tracking_uri(), manifest_of(upstream.values()), ctx.run_key)
    targets = [layout.workdir]
    if not ctx.settings.artifacts.keep_downloads:
        targets += layout.downloads(ctx.settings.months)
    with hold_home(ctx.settings.home, f"cleanup of {ctx.settings.partition} ({ctx.runner})", wait=True):
        removed = remove(targets)
    freed = sum(removed.values())
    said = f"; {len(remote)} path(s) from the tracking server's artifact store" if remote else ""
    return {"removed": [str(path) for path in removed], "bytes_freed": freed, "removed_remote": remote,
            "summary": f"removed {len(removed)} file(s), {freed:,} bytes{said}"}
