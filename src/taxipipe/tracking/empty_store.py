"""New SQLite MLflow stores as copies of an empty one, instead of migrating each.

MLflow makes a new store by running its schema migrations, about 1.3 s of CPU. The first
store an MLflow version makes on this machine is migrated as before, and an empty copy of
it is kept in the user's cache (`$XDG_CACHE_HOME/taxipipe/mlflow-stores`, by default
`~/.cache/taxipipe/mlflow-stores`), one per MLflow version; later new stores start as copies
of it. The copy is written under a temporary name and renamed into place, so an interrupted
run leaves no half-made store; a cache that cannot be written or read costs only the
migration. `unfinished` tells a whole store from one whose creation was cut short.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Callable

#: Makes a new, empty store at the database path, its artifacts under the root URI.
Migrate = Callable[[Path, str], None]


def cache_dir() -> Path:
    """Where the empty stores are kept: `$XDG_CACHE_HOME/taxipipe/mlflow-stores`."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "taxipipe" / "mlflow-stores"


def copy_empty_store(database: Path, migrate: Migrate) -> bool:
    """Create `database` as a copy of this MLflow version's empty store, which `migrate` makes
    on first use; False, leaving nothing at `database`, when the cache cannot be used."""
    from filelock import FileLock
    from mlflow.version import VERSION

    template = cache_dir() / f"mlflow-{VERSION}" / "mlflow.db"
    draft = database.with_name(f".{database.name}.copy")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(template.with_name("mlflow.db.lock")):
            if not template.is_file():
                migrate(template, (template.parent / "artifacts").as_uri())
        shutil.copyfile(template, draft)
        if unfinished(draft):
            raise sqlite3.DatabaseError(f"{template} is not a whole MLflow store")
        os.replace(draft, database)
    except sqlite3.Error:  # the cached store is broken: dropped, and made again by the next new store
        template.unlink(missing_ok=True)
        draft.unlink(missing_ok=True)
        return False
    except Exception:
        draft.unlink(missing_ok=True)
        return False
    return True


def unfinished(database: Path) -> bool:
    """Whether an existing store never got its default experiment: its creation was cut short.

    Raises sqlite3.Error for a file that is no SQLite database.
    """
    with closing(sqlite3.connect(database, timeout=60)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return "experiments" not in tables or not connection.execute("SELECT 1 FROM experiments LIMIT 1").fetchone()
