"""The data steps: extract, validate_data, transform and features (files in, files out)."""

from __future__ import annotations

from typing import Any, TypedDict

from taxipipe.errors import DataNotFoundError, DataQualityError, PipelineStateError, TaxipipeError
from taxipipe.partition import Partition
from taxipipe.safety.atomic import atomic_path, write_text_atomic
from taxipipe.steps.context import ROLES, StepContext, StepRecord, Upstream
from taxipipe.window import window_label


class ExtractRecord(StepRecord):
    """One month in the download cache."""

    month: str
    partition: str
    path: str
    url: str
    bytes: int
    downloaded: bool


class ValidateDataRecord(StepRecord):
    """The quality report of every month the run reads, by month label."""

    months: dict[str, dict[str, Any]]


class CleanRecord(TypedDict):
    """The clean rides of one role: the file, rides read and kept, and both by month."""

    path: str
    rows_in: int
    rows: int
    months: dict[str, dict[str, int]]


class TransformRecord(StepRecord):
    train: CleanRecord
    validation: CleanRecord


class FeaturesRecord(StepRecord):
    """The encoder, its width and rows by role, and the compute mode chosen for train."""

    mode: str
    features: int
    encoder: str
    compute: str
    rows: dict[str, int]


def extract_month(ctx: StepContext, month: Partition) -> ExtractRecord:
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


def extract(ctx: StepContext, upstream: Upstream) -> ExtractRecord:
    """The extract node of one month (`ctx.month`, set by `pipeline.run_step`)."""
    if ctx.month is None:
        raise PipelineStateError("extract runs once per month; run one of its month nodes")
    return extract_month(ctx, ctx.month)


def validate_data(ctx: StepContext, upstream: Upstream) -> ValidateDataRecord:
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
    checked = len(next(iter(reports.values())).rules)
    return {"months": {month.label: report.as_record() for month, report in reports.items()},
            "summary": f"{checked} rules passed on " + ", ".join(f"{r.source} ({r.rows:,} rows)"
                                                                for r in reports.values())}


def transform(ctx: StepContext, upstream: Upstream) -> TransformRecord:
    """Duration in minutes, rides of 1..60 minutes, the model's columns.

    The window's months go into one file, a row group at a time, in one schema whatever
    each month's writer used; a ride belongs to the month whose file holds it. A month (or
    window) that keeps fewer than `validation.min_rows` rides fails the data-quality rule
    and leaves the download cache.
    """
    from taxipipe.compute.stream import write_clean
    from taxipipe.tlc import forget

    minimum = ctx.settings.validation.min_rows
    kept: dict[str, CleanRecord] = {}
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
    return {"train": kept["train"], "validation": kept["validation"], "summary": ", ".join(
        f"{role}: {kept[role]['rows']:,} of {kept[role]['rows_in']:,} rides kept" for role in ROLES)}


def features(ctx: StepContext, upstream: Upstream) -> FeaturesRecord:
    """Fit the encoder on the training month and encode both months.

    The compute mode (`taxipipe.compute.choose`) depends on the memory free when it is chosen
    and on the rides of the clean files this step reads (which a host that never downloaded the
    months has too), so it is chosen here, once, and recorded: train (in whatever process) reads it from this
    record, as it reads the feature files written for it.
    """
    import pandas as pd

    from taxipipe.compute import choose
    from taxipipe.features import TARGET, Encoder, save_matrix

    compute = choose(ctx.settings, [ctx.clean_path(role) for role in ROLES])
    mode = ctx.settings.model.features
    if compute != "memory":
        return _features_streamed(ctx, compute)
    frames = {role: pd.read_parquet(ctx.clean_path(role)) for role in ROLES}
    encoder = Encoder.fit(mode, frames["train"])
    for role, frame in frames.items():
        with atomic_path(ctx.features_path(role)) as tmp:
            save_matrix(tmp, encoder.transform(frame), frame[TARGET].to_numpy())
    write_text_atomic(ctx.layout.encoder, encoder.to_json())
    width = len(encoder.feature_names)
    return {"mode": mode, "features": width, "encoder": str(ctx.layout.encoder), "compute": compute,
            "rows": {role: len(frame) for role, frame in frames.items()},
            "summary": f"{mode}: {width:,} features"}


def _features_streamed(ctx: StepContext, compute: str) -> FeaturesRecord:
    """The features of `features` a row group at a time, as parquet (external memory, Dask)."""
    from taxipipe.compute.stream import fit_encoder, write_encoded

    encoder = fit_encoder(ctx.clean_path("train"))
    rows = {role: write_encoded(ctx.clean_path(role), encoder, ctx.features_path(role)) for role in ROLES}
    write_text_atomic(ctx.layout.encoder, encoder.to_json())
    width = len(encoder.feature_names)
    return {"mode": encoder.mode, "features": width, "encoder": str(ctx.layout.encoder), "rows": rows,
            "compute": compute, "summary": f"{encoder.mode}: {width:,} features, streamed for {compute}"}
