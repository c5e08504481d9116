"""The embedded SQLite store: where it lives, made whole, relocated, and its errors in one sentence."""

from __future__ import annotations

import os
import sys
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from taxipipe.errors import TrackingError
from taxipipe.tracking.empty_store import copy_empty_store, unfinished

#: Tag of the default experiment: the artifact root the store's paths point at.
ROOT_TAG = "taxipipe.artifact_root"
_CREATED_STORES: set[str] = set()


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
