"""Runs: experiments, the values, datasets and notes logged on a run, and the runs a killed process left."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlparse
from typing import TYPE_CHECKING, Any, Iterator

from taxipipe.config import Settings
from taxipipe.tracking.store import artifact_root

if TYPE_CHECKING:
    from mlflow import MlflowClient

#: The experiment tag MLflow 3's UI reads and writes for an experiment's kind (GenAI or machine learning).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def experiment_id(settings: Settings, mlflow_client: MlflowClient, runner: str) -> str:
    """The runner's experiment, created on first use; a SQLite store keeps artifacts beside it."""
    return named_experiment(settings, mlflow_client, settings.experiment_name(runner))


def named_experiment(settings: Settings, mlflow_client: MlflowClient, name: str) -> str:
    """The experiment `name`, created on first use; a SQLite store keeps artifacts beside it.

    It is marked a machine-learning experiment (`EXPERIMENT_KIND`), as the kind selector of
    MLflow's UI would mark it.
    """
    from mlflow.exceptions import MlflowException

    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    try:
        return mlflow_client.create_experiment(name, artifact_location=artifact_root(settings.tracking_uri()),
                                               tags=dict([EXPERIMENT_KIND]))
    except MlflowException:
        return mlflow_client.get_experiment_by_name(name).experiment_id


def log_datasets(mlflow_client: MlflowClient, run_id: str, settings: Settings) -> None:
    """The run's training months and validation month as MLflow dataset inputs.

    Each month is a dataset named `green 2021-01` whose source is the URL it was downloaded
    from (a path becomes an absolute file:// URL, which means the same file anywhere) and whose
    digest is the start of its file's sha256; the input's context
    (training or validation) says what the run did with it. The file's parquet schema and row
    count go with it, so the run's Datasets panel, and a model's lineage, reach the data. A
    month whose download a cleanup already removed is left out.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from taxipipe.tlc import source_url
    from taxipipe.layout import Layout

    downloads = Layout(settings.home, settings.partition)
    roles = (("training", settings.training_months), ("validation", (settings.validation_month,)))
    inputs = []
    for context, months in roles:
        for month in months:
            if not downloads.download(month).exists():
                continue
            source = source_url(settings.data.url_template, month)
            if not urlparse(source).scheme:
                source = Path(source).resolve().as_uri()
            described = _describe_file(downloads.download(month), source)
            inputs.append(DatasetInput(Dataset(name=f"{month.color} {month.label}", **described),
                                       tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    mlflow_client.log_inputs(run_id, datasets=inputs)


def _describe_file(path: Path, source: str) -> dict[str, str]:
    """Digest, source, schema and profile of one downloaded parquet file, as MLflow records them."""
    import hashlib
    import json
    import warnings

    import pyarrow.parquet as pq
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolved = resolve_dataset_source(source)
    metadata = pq.read_metadata(path)
    return {"digest": digest.hexdigest()[:16], "source_type": resolved._get_source_type(),
            "source": resolved.to_json(),
            "schema": json.dumps({"mlflow_colspec": _colspecs(metadata.schema.to_arrow_schema())}),
            "profile": json.dumps({"num_rows": metadata.num_rows, "bytes": path.stat().st_size})}


def _colspecs(schema: Any) -> list[dict[str, str]]:
    """The parquet columns as MLflow column specs (a column of a type MLflow lacks is left out)."""
    specs = [{"name": column.name, "type": _mlflow_type(column.type)} for column in schema]
    return [spec for spec in specs if spec["type"] is not None]


def _mlflow_type(arrow_type: Any) -> str | None:
    import pyarrow as pa

    kinds = ((pa.types.is_int32, "integer"), (pa.types.is_integer, "long"), (pa.types.is_float32, "float"),
             (pa.types.is_floating, "double"), (pa.types.is_boolean, "boolean"),
             (pa.types.is_timestamp, "datetime"), (pa.types.is_string, "string"),
             (pa.types.is_large_string, "string"))
    return next((kind for test, kind in kinds if test(arrow_type)), None)


def describe_run(mlflow_client: MlflowClient, run_id: str, text: str) -> None:
    """Add a paragraph to the run's description (the `mlflow.note.content` tag MLflow's UI shows)."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    before = mlflow_client.get_run(run_id).data.tags.get(MLFLOW_RUN_NOTE)
    mlflow_client.set_tag(run_id, MLFLOW_RUN_NOTE, f"{before}\n\n{text}" if before else text)


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, if it is one."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def log_timings(mlflow_client: MlflowClient, run_id: str, timings: dict[str, float]) -> None:
    """Record how long each step took as metrics `step_seconds.<step>`."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(f"step_seconds.{step}", seconds, now, 0) for step, seconds in timings.items()]
    mlflow_client.log_batch(run_id, metrics=metrics)


def log_peak_memory(mlflow_client: MlflowClient, run_id: str, step: str) -> None:
    """Record this process's peak memory once `step` is done, as metric `peak_rss_mb.<step>`."""
    import time

    from mlflow.entities import Metric

    from taxipipe.peak_memory import peak_rss_bytes

    megabytes = round(peak_rss_bytes() / 2**20, 1)
    mlflow_client.log_batch(run_id, metrics=[Metric(f"peak_rss_mb.{step}", megabytes, int(time.time() * 1000), 0)])


def owner_tags() -> dict[str, str]:
    """Tags naming the process that owns a run or a lock (host, pid and, where the system tells,
    the process's start), so a later run can tell it was abandoned."""
    import socket

    from taxipipe.safety.atomic import process_started

    pid = str(os.getpid())
    started = process_started(pid)
    return {"taxipipe.host": socket.gethostname(), "taxipipe.pid": pid,
            **({"taxipipe.started": started} if started else {})}


def owner_gone(tags: dict[str, str]) -> str | None:
    """Why the process of this host that `owner_tags` named is gone (None: it still runs).

    A live pid whose start differs from the recorded one is another process that reuses it
    (after a crash, or PID 1 of a new container); tags without a start are judged by the pid.
    """
    from taxipipe.safety.atomic import process_alive, process_started

    pid, started = tags.get("taxipipe.pid", ""), tags.get("taxipipe.started")
    if not process_alive(pid):
        return f"its process (pid {pid or '?'}) is gone"
    if started and process_started(pid) not in (None, started):
        return f"pid {pid} is now another process"
    return None


def fail_abandoned_runs(mlflow_client: MlflowClient, experiment: str, partition: str, runner: str) -> list[str]:
    """Mark FAILED the runs of this partition and runner left RUNNING by a killed process."""
    import socket

    abandoned = []
    here = socket.gethostname()
    for run in mlflow_client.search_runs(
            [experiment], f"tags.partition = '{partition}' and tags.runner = '{runner}' and "
                          "attributes.status = 'RUNNING'"):
        tags = run.data.tags
        if tags.get("taxipipe.host") == here and owner_gone(tags) is None:
            continue
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
        abandoned.append(run.info.run_id)
    return abandoned


@contextmanager
def failed_on_error(mlflow_client: MlflowClient, run_id: str) -> Iterator[None]:
    """Mark the run FAILED when the block raises (or is interrupted), then re-raise."""
    try:
        yield
    except BaseException:
        with suppress(Exception):
            mlflow_client.set_terminated(run_id, "FAILED")
        raise


def log_values(mlflow_client: MlflowClient, run_id: str, params: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None, tags: dict[str, Any] | None = None) -> None:
    """Log params, metrics (None left out) and tags on the run in one batch."""
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    mlflow_client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


def pip_requirements() -> list[str]:
    """Pinned requirements of the served model: what `taxipipe.pyfunc` imports."""
    from importlib.metadata import version

    packages = ["mlflow", "xgboost-cpu", "scikit-learn", "pandas", "numpy", "scipy", "pyarrow", "pydantic",
                "pydantic-settings"]
    return [f"{name}=={version(name)}" for name in packages]
