"""The nine steps of the pipeline: plain functions, files in and files out.

Each step takes the run's `StepContext` and the small records its upstream steps returned
(keyed by step name; `pipeline.run_step` checks that every one the graph names is there),
writes its outputs atomically under the partition's directory, and returns a small,
JSON-serialisable record (paths, row counts, metrics, run ids). No step hands a DataFrame
to another, so every runner (simple, make, Airflow, Prefect, Dagster) can carry the records.
"""

from __future__ import annotations

import json
import time
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from taxipipe.config import Settings
from taxipipe.errors import DataNotFoundError, DataQualityError, PipelineStateError, TaxipipeError, TrackingError
from taxipipe.layout import Layout, remove
from taxipipe.partition import Partition
from taxipipe.safety.atomic import atomic_path, write_text_atomic
from taxipipe.safety.home_lock import hold_home
from taxipipe.window import window_key, window_label

Record = dict[str, Any]
Upstream = Mapping[str, Record]
ROLES = ("train", "validation")
#: Record fields that say how a run went rather than what it produced (ignored when comparing).
VOLATILE_FIELDS = frozenset({"seconds", "finished_at", "timings", "summary", "downloaded", "deployed_at"})
#: The libraries the steps import as they run (about 4 s of CPU in a fresh interpreter). Engines
#: that fork a process per step import them once in the process they fork from: Dagster's
#: executor (`runners/dagster.py`) and the stack's Airflow scheduler (`stack/airflow_scheduler.py`).
STEP_LIBRARIES = ("pandas", "pyarrow.parquet", "pandera.pandas", "xgboost", "mlflow.pyfunc",
                  "mlflow.store.tracking.sqlalchemy_store")


@dataclass(frozen=True)
class StepContext:
    """What every step needs: the settings, which runner runs it, extra run tags, the month of
    a per-month node, and the run's compute mode once `features` has chosen it."""

    settings: Settings
    runner: str = "simple"
    tags: Mapping[str, str] = field(default_factory=dict)
    month: Partition | None = None
    compute: str | None = None

    @property
    def layout(self) -> Layout:
        return Layout(self.settings.home, self.settings.partition, self.settings.data.train_months,
                      streamed=self.compute_mode != "memory")

    @property
    def compute_mode(self) -> str:
        """memory, external or dask: the mode `features` chose and recorded (see `decided`), or
        the one `taxipipe.compute.choose` picks now."""
        if self.compute is not None:
            return self.compute
        from taxipipe.compute import choose

        downloads = Layout(self.settings.home, self.settings.partition)
        return choose(self.settings, [downloads.download(month) for month in self.settings.months])

    def decided(self, upstream: Upstream) -> StepContext:
        """This context with the compute mode an upstream step recorded.

        The mode depends on the memory free when it is chosen, so it is chosen once, by
        `features`, and every later step (in whatever process) reads it from the records.
        """
        recorded = next((record["compute"] for record in upstream.values() if record.get("compute")), None)
        return self if recorded is None or self.compute is not None else replace(self, compute=recorded)

    def raw_paths(self, role: str) -> list[tuple[str, Path]]:
        """(month label, download) of the window (role train) or of the validation month."""
        layout = Layout(self.settings.home, self.settings.partition)
        settings = self.settings
        months = settings.training_months if role == "train" else (settings.validation_month,)
        return [(month.label, layout.download(month)) for month in months]

    def clean_path(self, role: str) -> Path:
        return self.layout.train_clean if role == "train" else self.layout.validation_clean

    def features_path(self, role: str) -> Path:
        return self.layout.train_features if role == "train" else self.layout.validation_features


def extract_month(ctx: StepContext, month: Partition) -> Record:
    """Download one month into the download cache, which every partition reading it shares.

    A month the source lacks fails here, before any training; a month of a training window
    of several months is named with its window.
    """
    from taxipipe.compute import check
    from taxipipe.tlc import fetch, source_url

    check(ctx.settings)
    data = ctx.settings.data
    url = source_url(data.url_template, month)
    path = ctx.layout.download(month)
    window = ctx.settings.training_months
    try:
        downloaded = fetch(url, path, data.download_retries, data.download_backoff_seconds)
    except DataNotFoundError as exc:
        if month not in window or len(window) == 1:
            raise
        raise DataNotFoundError(f"month {month} of the training window {window_label(window)} "
                                f"is missing: {exc}") from None
    size = path.stat().st_size
    return {"month": month.label, "partition": month.key, "path": str(path), "url": url, "bytes": size,
            "downloaded": downloaded,
            "summary": f"{month.key} {'downloaded' if downloaded else 'cached'} ({size:,} bytes)"}


def extract(ctx: StepContext, upstream: Upstream) -> Record:
    """The extract node of one month (`ctx.month`, set by `pipeline.run_step`)."""
    if ctx.month is None:
        raise PipelineStateError("extract runs once per month; run one of its month nodes")
    return extract_month(ctx, ctx.month)


def validate_data(ctx: StepContext, upstream: Upstream) -> Record:
    """Check every month the run reads against the quality rules; fail naming every broken rule."""
    from taxipipe.quality import check_trips
    from taxipipe.tlc import forget, read_trips

    rules = ctx.settings.validation
    reports = {}
    for month in ctx.settings.months:
        path = ctx.layout.download(month)
        try:
            frame = read_trips(path, ctx.settings.data.color).to_pandas()
        except TaxipipeError as exc:
            forget(path)
            raise type(exc)(f"{exc} (removed from the download cache)") from None
        reports[month] = check_trips(
            frame, path.name, rules.min_positive_duration_share, rules.max_invalid_row_share
        )
        del frame
    failed = [report for report in reports.values() if not report.passed]
    if failed:
        for month, report in reports.items():
            if not report.passed:
                forget(ctx.layout.download(month))
        raise DataQualityError(
            "data quality rules failed (files removed from the download cache): "
            + " | ".join(f"{report.source}: {report.summary()}" for report in failed)
        )
    record: Record = {month.label: report.as_record() for month, report in reports.items()}
    checked = len(next(iter(reports.values())).rules)
    record["summary"] = f"{checked} rules passed on " + ", ".join(
        f"{r.source} ({r.rows:,} rows)" for r in reports.values()
    )
    return record


def transform(ctx: StepContext, upstream: Upstream) -> Record:
    """Duration in minutes, rides of 1..60 minutes, the model's columns.

    The window's months go into one file, a row group at a time, in one schema whatever
    each month's writer used; a ride belongs to the month whose file holds it. A month (or
    window) that keeps fewer than `validation.min_rows` rides fails the data-quality rule
    and leaves the download cache.
    """
    from taxipipe.compute.stream import write_clean
    from taxipipe.tlc import forget

    minimum = ctx.settings.validation.min_rows
    kept = {}
    for role in ROLES:
        months = write_clean(ctx.raw_paths(role), ctx.settings.data.color, ctx.clean_path(role))
        kept[role] = {"path": str(ctx.clean_path(role)),
                      "rows_in": sum(month["rows_in"] for month in months.values()),
                      "rows": sum(month["rows"] for month in months.values()), "months": months}
    too_few = [role for role, counts in kept.items() if counts["rows"] < minimum]
    if too_few:
        names = {"train": window_label(ctx.settings.training_months), "validation": ctx.settings.validation_month.label}
        for role in too_few:
            for _, path in ctx.raw_paths(role):
                forget(path)
            ctx.clean_path(role).unlink(missing_ok=True)
        raise DataQualityError(
            "data quality rule 'validation.min_rows' failed (files removed from the download cache): "
            + " | ".join(f"{ctx.settings.data.color} {names[role]}: {kept[role]['rows']:,} of "
                         f"{kept[role]['rows_in']:,} rides last 1..60 minutes, fewer than {minimum:,}"
                         for role in too_few)
        )
    record: Record = dict(kept)
    record["summary"] = ", ".join(
        f"{role}: {record[role]['rows']:,} of {record[role]['rows_in']:,} rides kept" for role in ROLES
    )
    return record


def features(ctx: StepContext, upstream: Upstream) -> Record:
    """Fit the encoder on the training month and encode both months."""
    import pandas as pd

    from taxipipe.features import TARGET, Encoder, save_matrix

    ctx = replace(ctx, compute=ctx.compute_mode)
    mode = ctx.settings.model.features
    if ctx.layout.streamed:
        return _features_streamed(ctx)
    frames = {role: pd.read_parquet(ctx.clean_path(role)) for role in ROLES}
    encoder = Encoder.fit(mode, frames["train"])
    for role, frame in frames.items():
        with atomic_path(ctx.features_path(role)) as tmp:
            save_matrix(tmp, encoder.transform(frame), frame[TARGET].to_numpy())
    write_text_atomic(ctx.layout.encoder, encoder.to_json())
    width = len(encoder.feature_names)
    return {"mode": mode, "features": width, "encoder": str(ctx.layout.encoder), "compute": ctx.compute,
            "rows": {role: len(frame) for role, frame in frames.items()},
            "summary": f"{mode}: {width:,} features"}


def _features_streamed(ctx: StepContext) -> Record:
    """The features of `features` a row group at a time, as parquet (external memory, Dask)."""
    from taxipipe.compute.stream import fit_encoder, write_encoded

    encoder = fit_encoder(ctx.clean_path("train"))
    rows = {role: write_encoded(ctx.clean_path(role), encoder, ctx.features_path(role)) for role in ROLES}
    write_text_atomic(ctx.layout.encoder, encoder.to_json())
    width = len(encoder.feature_names)
    return {"mode": encoder.mode, "features": width, "encoder": str(ctx.layout.encoder), "rows": rows,
            "compute": ctx.compute, "summary": f"{encoder.mode}: {width:,} features, streamed for {ctx.compute}"}


def train(ctx: StepContext, upstream: Upstream) -> Record:
    """Train the configured model kind inside one MLflow run that records everything.

    The run exists before training starts, so its duration is the training's; for kinds that
    train in rounds progress is shown while they run, and under -v every 10th round's score
    is logged to the run live. The window trains in memory, in external memory or on Dask
    (`taxipipe.compute`); the run records which, the window's first and last month and the
    rides of each month.
    """
    from taxipipe import compute, console, tracking
    from taxipipe.peak_memory import peak_rss_bytes
    from taxipipe.compute.stream import month_counts
    from taxipipe.features import Encoder
    from taxipipe.models.base import rmse
    from taxipipe.models.registry import get_kind

    settings, layout, mode = ctx.settings, ctx.layout, ctx.compute_mode
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
                                layout.workdir / "xgboost-cache", callbacks)
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


def validate_model(ctx: StepContext, upstream: Upstream) -> Record:
    """Gate the model with the champion rule (`taxipipe.gate`); record the verdict on the run."""
    trained = upstream["train"]
    return _judge(ctx, trained["run_id"], trained["rmse"])


def _judge(ctx: StepContext, run_id: str, score: float) -> Record:
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


def save(ctx: StepContext, upstream: Upstream) -> Record:
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


def deploy(ctx: StepContext, upstream: Upstream) -> Record:
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


def _settle(ctx: StepContext, client: Any, version: str, verdict: Record, run_id: str) -> Record:
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


def _verdict_now(ctx: StepContext, verdict: Record, current: Any | None, earlier: Any | None) -> Record:
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


def cleanup(ctx: StepContext, upstream: Upstream) -> Record:
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
