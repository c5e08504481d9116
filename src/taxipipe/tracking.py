"""MLflow: the store, experiments, runs, the pyfunc model and the registry's champion alias."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import unquote, urlparse

from taxipipe.config import Settings
from taxipipe.empty_store import copy_empty_store, unfinished
from taxipipe.errors import TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
logger = logging.getLogger(__name__)
#: Model-version tag saying what deploy made of it: pending (being promoted), champion, rejected,
#: interrupted (registered, but the process died before it could become champion), or replaced.
PROMOTION_TAG, PENDING, INTERRUPTED = "promotion", "pending", "interrupted before it became champion"
#: The start of the promotion tag of a former champion: `replaced by v7`.
REPLACED = "replaced by"
#: Tag of the default experiment: the artifact root the store's paths point at.
ROOT_TAG = "taxipipe.artifact_root"
#: The experiment tag MLflow 3's UI reads and writes for an experiment's kind (GenAI or machine learning).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: Where MLflow 3's UI opens on its model-training view (its sidebar switch otherwise starts on GenAI).
UI_START_PAGE = "/#/experiments?workflowType=machine_learning"
_CREATED_STORES: set[str] = set()
_REACHED_SERVERS: set[str] = set()
_warm_up: threading.Thread | None = None


def warm_up(settings: Settings, runner: str) -> None:
    """Open the store and the runner's experiment in a background thread.

    Importing MLflow and creating a new SQLite store take about two seconds of the first
    run; the data steps and training overlap with them instead of waiting. `client` waits
    for the warm-up, so the store is never created twice.
    """
    global _warm_up

    def prepare() -> None:
        try:
            experiment_id(settings, _open(settings), runner)
        except Exception:
            pass

    _warm_up = threading.Thread(target=prepare, name="mlflow-warm-up", daemon=True)
    _warm_up.start()


def client(settings: Settings) -> MlflowClient:
    """An MLflow client on the configured store (the embedded SQLite one by default).

    Served models carry explicit pip requirements, so MLflow is told not to copy the
    project's uv files into them, not to draw download progress bars, to log errors only
    (MLFLOW_LOGGING_LEVEL, or `-v` on the command line, shows more), to send no telemetry and
    not to print a run's links when it ends against a tracking server (the run's lines name it).
    A tracking server's errors are retried 4 times within about 15 s (MLflow's own default is
    7 times within about 4 minutes); the runners that retry steps retry on top of that, and
    MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR in the environment win. Database errors it re-raises are not also logged with their traceback: the step
    reports them in one sentence.
    """
    finish_warm_up()
    return _open(settings)


def finish_warm_up() -> None:
    """Wait for the warm-up: a run that fails must not leave while it writes a new store.

    An interrupted run leaves without waiting: the signal may have left Python's import lock
    held, and the warm-up would wait for it forever. A store cut short that way is built under
    a temporary name, as after a kill, so nothing half-made is left in place (`prepare_store`).
    """
    if _warm_up is not None:
        _warm_up.join()


def _open(settings: Settings) -> MlflowClient:
    for name, value in (("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"), ("MLFLOW_LOG_UV_FILES", "false"),
                        ("MLFLOW_LOGGING_LEVEL", "ERROR"), ("MLFLOW_DISABLE_TELEMETRY", "true"),
                        ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"),
                        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")):
        os.environ.setdefault(name, value)
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    uri = settings.tracking_uri()
    if sqlite_file(uri) is not None and uri not in _CREATED_STORES:
        prepare_store(uri)
    elif uri.startswith(("http://", "https://")) and uri not in _REACHED_SERVERS:
        _check_server(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def check_reachable(settings: Settings) -> None:
    """Probe the tracking server once as a run starts, so an unreachable one fails before
    the data steps rather than in `train`. The embedded store needs no probe."""
    uri = settings.tracking_uri()
    if uri.startswith(("http://", "https://")) and uri not in _REACHED_SERVERS:
        _check_server(uri)


def _check_server(uri: str) -> None:
    """Fail in seconds, with the fix, when the tracking server does not answer.

    Without this MLflow retries for minutes before it gives up with a traceback.
    """
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5)
    except requests.RequestException:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri}; start it (`taxipipe ui`) or point "
            "mlflow.tracking_uri (--tracking-uri or TAXIPIPE_MLFLOW__TRACKING_URI) elsewhere"
        ) from None
    _REACHED_SERVERS.add(uri)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI (None for other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    name = unquote(uri[len("sqlite:///"):].split("?", 1)[0])
    return Path(name).absolute() if name and name != ":memory:" else None


def artifact_root(uri: str) -> str | None:
    """Where a SQLite store keeps artifacts: `artifacts/` beside the database file.

    None for server stores, which decide for themselves.
    """
    database = sqlite_file(uri)
    return (database.parent / "artifacts").as_uri() if database is not None else None


def prepare_store(uri: str) -> None:
    """Make the SQLite store at `uri` ready: created whole, relocated, readable.

    Under a file lock (processes that open a new store at once would otherwise race through
    MLflow's migrations): a missing store is built under a temporary name and renamed into
    place, so an interrupted first run leaves no half-made store; a store left unfinished by
    an older version is rebuilt; a store whose home moved has its artifact paths re-pointed.
    Anything else that stops the store from opening becomes one sentence naming the file.
    """
    from filelock import FileLock
    from mlflow import MlflowClient

    database = sqlite_file(uri)
    assert database is not None
    root = artifact_root(uri)
    assert root is not None
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(database.with_name(database.name + ".lock")):
            if database.exists() and unfinished(database):
                print(f"⚠️  the MLflow store {database} was left unfinished by an interrupted first run; "
                      "creating it again", file=sys.stderr, flush=True)
                database.unlink()
            if not database.exists():
                _create_store(database, root)
            _relocate(database, root)
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise _store_error(database, exc) from None
    _CREATED_STORES.add(uri)


def _create_store(database: Path, root: str) -> None:
    """A new store: a copy of this MLflow version's empty store (empty_store.py), or migrated here."""
    if not copy_empty_store(database, _migrate):
        _migrate(database, root)


def _migrate(database: Path, root: str) -> None:
    """Migrate a new store under a temporary name, then rename it into place."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    draft = database.with_name(f".{database.name}.new")
    leftovers = [draft, *(draft.with_name(draft.name + end) for end in ("-journal", "-wal", "-shm"))]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    draft_uri = f"sqlite:///{draft}"
    try:
        store = SqlAlchemyStore(draft_uri, root)
        store.set_experiment_tag(SqlAlchemyStore.DEFAULT_EXPERIMENT_ID, _root_tag(root))
    except Exception:
        for leftover in leftovers:
            leftover.unlink(missing_ok=True)
        raise
    finally:
        engine = SqlAlchemyStore._engine_map.pop(draft_uri, None)
        if engine is not None:
            engine.dispose()
    os.replace(draft, database)


def _root_tag(root: str) -> Any:
    from mlflow.entities import ExperimentTag

    return ExperimentTag(ROOT_TAG, root)


def _relocate(database: Path, root: str) -> None:
    """Re-point the store's artifact paths at `root` when the store was moved or copied.

    MLflow records absolute artifact locations (experiments, runs, logged models, model
    versions). The default experiment's tag `taxipipe.artifact_root` says where they pointed
    when last opened; a store that lacks it (older versions) is judged by its experiments.
    """
    import sqlite3

    with closing(sqlite3.connect(database, timeout=60)) as connection, connection:
        row = connection.execute("SELECT value FROM experiment_tags WHERE experiment_id = 0 AND key = ?",
                                 (ROOT_TAG,)).fetchone()
        old = row[0] if row else _former_root(connection)
        if old is not None and old != root:
            for prefix, new in ((old, root), (_uri_path(old), _uri_path(root))):
                for table, column in _text_columns(connection):
                    connection.execute(
                        f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                        f'WHERE substr("{column}", 1, ?) = ?', (new, len(prefix) + 1, len(prefix), prefix))
        if row is None or old != root:
            connection.execute("INSERT OR REPLACE INTO experiment_tags (key, value, experiment_id) VALUES (?, ?, 0)",
                               (ROOT_TAG, root))


def _former_root(connection: Any) -> str | None:
    """The artifact root of a store written before the tag existed: its experiments' shared one."""
    row = connection.execute(
        "SELECT artifact_location FROM experiments WHERE experiment_id != 0 AND artifact_location LIKE ? "
        "ORDER BY experiment_id LIMIT 1", ("file://%/mlflow/artifacts",)).fetchone()
    return row[0] if row else None


def _uri_path(uri: str) -> str:
    return unquote(urlparse(uri).path)


def _text_columns(connection: Any) -> list[tuple[str, str]]:
    tables = [row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return [(table, column[1]) for table in tables
            for column in connection.execute(f'PRAGMA table_info("{table}")')
            if any(kind in column[2].upper() for kind in ("CHAR", "TEXT", "CLOB"))]


def _store_error(database: Path, exc: Exception) -> TrackingError:
    """One sentence for a store that cannot be opened, created or written."""
    text = f"{exc.__class__.__name__}: {exc}"
    setting = "or point mlflow.tracking_uri (--tracking-uri or TAXIPIPE_MLFLOW__TRACKING_URI) elsewhere"
    if any(sign in text for sign in ("file is not a database", "malformed", "not a database")):
        return TrackingError(f"the MLflow store {database} is not a readable SQLite database (corrupt); move it "
                             f"aside to start a new store or restore it from a backup, {setting}")
    if any(sign in text for sign in ("disk is full", "No space left", "File too large", "Disk quota")):
        return TrackingError(f"there is no room to write the MLflow store {database} (disk full); free space "
                             f"on that disk {setting}")
    if any(sign in text for sign in ("readonly", "read-only", "Read-only", "Permission denied",
                                     "unable to open database file")):
        return TrackingError(f"the MLflow store {database} cannot be written (read-only or not permitted); "
                             f"make {database.parent} writable {setting}")
    return TrackingError(f"the MLflow store {database} cannot be opened ({text.splitlines()[0][:200]}); "
                         f"move it aside to start a new store {setting}")


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
    from (a path becomes an absolute file:// URL, which means the same file anywhere) and whose digest is the start of its file's sha256; the input's context
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


def log_step_seconds(mlflow_client: MlflowClient, run_id: str, timings: dict[str, float]) -> None:
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


def champion_version(mlflow_client: MlflowClient, model_name: str) -> Any | None:
    """The registered version behind the `champion` alias; None only when there is none.

    "No such model" and "no such alias" mean no champion yet. Any other answer (a server
    error, a store that cannot be read) raises TrackingError: the gate must not treat the
    new model as the first one just because the registry did not answer.
    """
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        message = str(exc).lower()
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
                exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message):
            return None
        raise TrackingError(
            f"cannot look up the '{CHAMPION}' of model {model_name} in the registry "
            f"({str(exc).splitlines()[0][:200]}); nothing was promoted, run again when the registry answers"
        ) from None


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


#: Model-version tag: the months (partition keys, comma-separated) the version trained on.
TRAINED_ON_TAG = "trained_on"
#: How long a promotion lock is trusted, whoever holds it, before it is broken.
PROMOTION_LEASE_SECONDS = 600.0


def trained_on(mlflow_client: MlflowClient, version: Any) -> tuple[str, ...]:
    """The months (partition keys) a registered version trained on.

    Versions registered before the tag existed are read from their run's parameters.
    """
    if version.tags.get(TRAINED_ON_TAG):
        return tuple(version.tags[TRAINED_ON_TAG].split(","))
    from taxipipe.partition import Partition
    from taxipipe.window import training_window

    params = mlflow_client.get_run(version.run_id).data.params
    last = (Partition.parse(params["color"], params["window_last"]) if "window_last" in params
            else Partition(params["color"], int(params["year"]), int(params["month"])))
    return tuple(month.key for month in training_window(last, int(params.get("train_months", 1))))


def version_of_run(mlflow_client: MlflowClient, model_name: str, run_id: str) -> Any | None:
    """The version of `model_name` already registered from `run_id` (a retried deploy), if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return min(found, key=lambda version: int(version.version)) if found else None


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


def promote(mlflow_client: MlflowClient, model_name: str, version: str) -> None:
    """Point `champion` at `version`, the last registry write a promotion needs, then tag it
    champion and the champion it replaced `replaced by vN`.

    First the versions an interrupted deploy left pending are settled: the one the alias names
    (its deploy was killed after the alias moved) is tagged champion, the others interrupted.
    The version keeps its pending tag until the alias has moved, so a kill before the move
    leaves no version tagged champion that never was; a tag this process could not write after
    the move is settled the same way by the next promotion.
    """
    from mlflow.exceptions import MlflowException

    current = champion_version(mlflow_client, model_name)
    for stale in mlflow_client.search_model_versions(
            f"name = '{model_name}' and tags.{PROMOTION_TAG} = '{PENDING}'"):
        if str(stale.version) != str(version):
            became = current is not None and str(current.version) == str(stale.version)
            mlflow_client.set_model_version_tag(model_name, stale.version, PROMOTION_TAG,
                                                CHAMPION if became else INTERRUPTED)
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, version)
    with suppress(MlflowException):
        mlflow_client.set_model_version_tag(model_name, version, PROMOTION_TAG, CHAMPION)
        if current is not None and str(current.version) != str(version):
            mlflow_client.set_model_version_tag(model_name, current.version, PROMOTION_TAG,
                                                f"{REPLACED} v{version}")


def model_description(model_name: str) -> str:
    """What the registered model is and how its champion is chosen (the registry's description)."""
    return (f"NYC taxi trip duration in minutes (rides of 1 to 60 minutes), predicted from the pickup and "
            f"drop-off zones and the trip distance. Every run registers a version; use "
            f"`models:/{model_name}@{CHAMPION}`. A version takes the '{CHAMPION}' alias only when its RMSE on "
            f"the month after its training months is within the configured bounds and lower than the "
            f"champion's on that month (docs/champion.md). Each version's `{PROMOTION_TAG}` tag says what it "
            f"became: {CHAMPION}, rejected, or {REPLACED} a later version.")


def register(mlflow_client: MlflowClient, name: str, model_uri: str, run_id: str, model_id: str | None,
             tags: dict[str, str]) -> str:
    """A new version of registered model `name` (created on first use, described); its version number.

    The client's calls print nothing, unlike `mlflow.register_model`; the news is logged (-v).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        mlflow_client.create_registered_model(name, description=model_description(name))
        logger.debug(f"registered model '{name}'")
    except MlflowException as exc:
        if exc.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise
        if not mlflow_client.get_registered_model(name).description:
            mlflow_client.update_registered_model(name, description=model_description(name))
    version = mlflow_client.create_model_version(name, model_uri, run_id=run_id, tags=tags, model_id=model_id).version
    logger.debug(f"created version {version} of model '{name}'")
    return version


def pip_requirements() -> list[str]:
    """Pinned requirements of the served model: what `taxipipe.pyfunc` imports."""
    from importlib.metadata import version

    packages = ["mlflow", "xgboost-cpu", "scikit-learn", "pandas", "numpy", "scipy", "pyarrow", "pydantic",
                "pydantic-settings"]
    return [f"{name}=={version(name)}" for name in packages]
