"""The steps after training: validate_model (the champion gate), save, deploy and cleanup."""

from __future__ import annotations

import json
import time
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

from taxipipe.errors import PipelineStateError, TrackingError
from taxipipe.layout import remove
from taxipipe.safety.atomic import atomic_path, write_text_atomic
from taxipipe.safety.home_lock import hold_home
from taxipipe.steps.context import Record, StepContext, StepRecord, Upstream


class VerdictRecord(StepRecord):
    """The gate's verdict on the run's model, and the champion it was judged against."""

    run_id: str
    rmse: float
    promotable: bool
    rule: str
    reason: str
    champion_rmse: float | None
    champion_version: str | None


class SaveRecord(StepRecord):
    """The pyfunc model logged to the run."""

    run_id: str
    model_uri: str
    model_id: str


class DeployRecord(StepRecord):
    """The deployment record (`record`, the file) as deploy wrote it: the registered version,
    whether it is champion now, and why."""

    model_name: str
    version: int
    champion: bool
    promotion: str
    reason: str
    run_id: str
    rmse: float
    partition: str
    runner: str
    deployed_at: str
    record: str


class CleanupRecord(StepRecord):
    """The files cleanup removed and the bytes they held."""

    removed: list[str]
    bytes_freed: int


def validate_model(ctx: StepContext, upstream: Upstream) -> VerdictRecord:
    """Gate the model with the champion rule (`taxipipe.gate`); record the verdict on the run."""
    trained = upstream["train"]
    return _judge(ctx, trained["run_id"], trained["rmse"])


def _judge(ctx: StepContext, run_id: str, score: float) -> VerdictRecord:
    """Judge the run's model against the champion the registry names now.

    The champion is looked up once, and that version (not whatever the alias names a moment
    later) is scored on this run's validation month, unless the comparison is unfair anyway.
    """
    from taxipipe import gate, tracking

    settings = ctx.settings
    client = tracking.client(settings)
    found = tracking.champion_version(client, settings.mlflow.model_name)
    trained_on = [month.key for month in settings.training_months]
    validation_month = settings.validation_month.key
    champion = None
    if found is not None:
        champion = gate.Champion(str(found.version), tracking.trained_on(client, found))
        if gate.fair(champion, trained_on, validation_month):
            champion = replace(champion, rmse=_score_version(ctx, found.version))
    verdict = gate.judge(score, trained_on, validation_month, settings.validation, champion)
    tracking.log_values(client, run_id, metrics={"champion_rmse": champion.rmse if champion else None},
                        tags={"validation.promotable": verdict.promotable, "validation.rule": verdict.rule,
                              "validation.reason": verdict.reason})
    tracking.describe_run(client, run_id, f"Gate: {'' if verdict.promotable else 'not '}promotable, {verdict.reason}.")
    return {"run_id": run_id, "rmse": score, "promotable": verdict.promotable, "rule": verdict.rule,
            "reason": verdict.reason, "champion_rmse": champion.rmse if champion else None,
            "champion_version": champion.version if champion else None,
            "summary": ("promotable: " if verdict.promotable else "not promotable: ") + verdict.reason}


def _score_version(ctx: StepContext, version: str) -> float:
    """The RMSE of registered `version` on this run's validation month.

    The version predicts on the model itself, as `taxipipe serve` runs it, not through MLflow's
    input check, which tests each of the month's values one by one (about a second of CPU).
    """
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from taxipipe.features import MODEL_COLUMNS, TARGET
    from taxipipe.models.base import rmse

    uri = f"models:/{ctx.settings.mlflow.model_name}/{version}"
    try:
        champion = mlflow.pyfunc.load_model(uri, suppress_warnings=True).unwrap_python_model()
    except (MlflowException, OSError) as exc:
        raise _unloadable(uri, version, exc) from None
    if not ctx.layout.validation_clean.exists():
        raise PipelineStateError(f"the validation month's rides ({ctx.layout.validation_clean}) are gone, so the "
                                 "champion cannot be scored; run the pipeline again from transform")
    rides = pd.read_parquet(ctx.layout.validation_clean)
    return rmse(rides[TARGET], champion.predict(None, rides[MODEL_COLUMNS]))


def _unloadable(uri: str, version: str, exc: Exception) -> TrackingError:
    """One sentence for a champion that cannot be loaded: a file missing from its artifacts
    (named, with what to do), or a registry that did not answer."""
    import re

    from taxipipe.tracking import CHAMPION

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    named = re.search(r'"MLmodel" configuration file at "([^"]+)"', text)
    missing = exc.filename if isinstance(exc, FileNotFoundError) else named.group(1) if named else None
    if missing is None:
        return TrackingError(f"cannot load the champion {uri} to compare with it ({text[:200]}); "
                             "nothing was promoted, run again when the registry answers")
    return TrackingError(f"the champion v{version} ({uri}) cannot be loaded to compare with it: its file {missing} "
                         "is missing; nothing was promoted; restore that file from a backup of the artifact store, or "
                         f"point the '{CHAMPION}' alias at a version whose files are whole (the model's page in "
                         "`taxipipe ui`), then run again")


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
    """Register the model version with the gate's verdict; move `champion` only if it allowed it.

    Under the registry's promotion lock (`tracking.promotion_lock`) the champion is looked up
    again: if it moved since `validate_model`, the model is judged again against the new one.
    A retry reuses the version an earlier attempt registered from the same run. The deployment
    record is written before the alias moves (the last registry write), as pending, and settled
    once the alias has moved; if anything fails before that, the record is put back and a
    version this attempt registered (and the alias does not name) is deleted, so a deploy that
    fails has done nothing the user can see, and one that promoted has said so.
    """
    from taxipipe import tracking

    verdict = upstream["validate_model"]
    saved = upstream["save"]
    settings = ctx.settings
    client = tracking.client(settings)
    name, run_id = settings.mlflow.model_name, saved["run_id"]
    with tracking.promotion_lock(client, name, f"deploy of {settings.partition} ({ctx.runner})"):
        earlier = tracking.version_of_run(client, name, run_id)
        verdict = _verdict_now(ctx, verdict, tracking.champion_version(client, name), earlier)
        version = earlier.version if earlier is not None else tracking.register(
            client, name, saved["model_uri"], run_id, saved["model_id"], tags={
                "run_id": run_id, "rmse": f"{verdict['rmse']:.6f}", "partition": settings.partition.key,
                tracking.TRAINED_ON_TAG: ",".join(month.key for month in settings.training_months),
                "runner": ctx.runner, "model_kind": settings.model.kind})
        try:
            record = _settle(ctx, client, version, verdict, run_id)
        except BaseException:
            if earlier is None:
                with suppress(Exception):
                    champion = tracking.champion_version(client, name)
                    if champion is None or str(champion.version) != str(version):
                        client.delete_model_version(name, version)
            raise
    promotable = record["champion"]
    outcome = (f"version {version} is now '{tracking.CHAMPION}' ({verdict['reason']})" if promotable
               else f"version {version} registered; champion unchanged: {verdict['reason']}")
    return {**record, "record": str(ctx.layout.deployment_record), "summary": outcome}


def _settle(ctx: StepContext, client: Any, version: str, verdict: VerdictRecord, run_id: str) -> Record:
    """Write the deployment record, tag the version with the verdict, then move the alias if it
    allows; if any of it fails, the record is put back as it was.

    A promotion is first recorded as pending (`"champion": false`); the settled record is
    written beside it before the alias moves and renamed into place once it has moved, so a
    kill in between leaves a record that claims nothing the registry does not show.
    """
    from taxipipe import tracking

    settings, name, promotable = ctx.settings, ctx.settings.mlflow.model_name, verdict["promotable"]
    path = ctx.layout.deployment_record
    record = {"model_name": name, "version": int(version), "champion": False,
              tracking.PROMOTION_TAG: tracking.PENDING if promotable else "rejected",
              "reason": verdict["reason"], "run_id": run_id, "rmse": verdict["rmse"],
              "partition": settings.partition.key, "runner": ctx.runner,
              "deployed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    previous = _replace_record(path, record)
    moved = False
    try:
        for key, value in {"verdict": "promoted" if promotable else "not promoted", "reason": verdict["reason"],
                           tracking.PROMOTION_TAG: record[tracking.PROMOTION_TAG]}.items():
            client.set_model_version_tag(name, version, key, value)
        if promotable:
            record = {**record, "champion": True, tracking.PROMOTION_TAG: tracking.CHAMPION}
            with atomic_path(path) as settled:
                settled.write_text(_record_text(record))
                tracking.promote(client, name, version)
                moved = True
    except BaseException:
        if not moved:
            _restore_record(path, previous)
        raise
    if promotable:
        _settle_interrupted(path.parent, client, name, path)
    return record


def _settle_interrupted(folder: Path, client: Any, name: str, promoted: Path) -> None:
    """Give the home's other records still pending (deploys killed before their alias moved)
    the promotion the registry now shows for their version (`tracking.promote` retagged it).

    Best effort: a record it cannot settle stays pending, which claims nothing.
    """
    from taxipipe import tracking

    for path in folder.glob("*.json"):
        with suppress(Exception):
            record = json.loads(path.read_text())
            if path == promoted or record.get(tracking.PROMOTION_TAG) != tracking.PENDING or \
                    record.get("model_name") != name:
                continue
            tags = client.get_model_version(name, str(record["version"])).tags
            write_text_atomic(path, _record_text({**record, "champion": False,
                                                  tracking.PROMOTION_TAG: tags.get(tracking.PROMOTION_TAG)}))


def _verdict_now(ctx: StepContext, verdict: VerdictRecord, current: Any | None, earlier: Any | None) -> VerdictRecord:
    """The verdict that holds against the champion the registry names now (`current`).

    `earlier` is the version an earlier attempt of this run registered, if any.
    """
    if earlier is not None and current is not None and str(current.version) == str(earlier.version):
        return {**verdict, "promotable": True, "rule": "retried", "reason": "promoted by an earlier attempt of this run"}
    now = str(current.version) if current is not None else None
    if now == (str(verdict["champion_version"]) if verdict["champion_version"] is not None else None):
        return verdict
    judged = _judge(ctx, verdict["run_id"], verdict["rmse"])
    before, after = (f"v{version}" if version else "none" for version in (verdict["champion_version"], now))
    return {**judged, "reason": f"the champion moved from {before} to {after} since validate_model; "
                                f"judged again: {judged['reason']}"}


def _replace_record(path: Path, record: Record) -> str | None:
    """Write the deployment record atomically; return what it held before (None: nothing)."""
    previous = path.read_text() if path.exists() else None
    write_text_atomic(path, _record_text(record))
    return previous


def _record_text(record: Record) -> str:
    return json.dumps(record, indent=2) + "\n"


def _restore_record(path: Path, previous: str | None) -> None:
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        write_text_atomic(path, previous)


def cleanup(ctx: StepContext, upstream: Upstream) -> CleanupRecord:
    """Remove the partition's intermediates (and its downloads if asked); report what went.

    Waits for the home's run lock, so it never deletes what a run holding it is using.
    """
    layout = ctx.layout
    targets = [layout.workdir]
    if not ctx.settings.artifacts.keep_downloads:
        targets += layout.downloads(ctx.settings.months)
    with hold_home(ctx.settings.home, f"cleanup of {ctx.settings.partition} ({ctx.runner})", wait=True):
        removed = remove(targets)
    freed = sum(removed.values())
    return {"removed": [str(path) for path in removed], "bytes_freed": freed,
            "summary": f"removed {len(removed)} file(s), {freed:,} bytes"}
