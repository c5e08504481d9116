"""Where the stack keeps its state under {home}/stack, its generated secrets (a 0600 file), and
the record of the running stack that lets a shell without its home find it."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping

from taxipipe.safety.atomic import write_private

#: PostgreSQL refuses to run as root: under root the cluster runs as this user.
RUN_AS_ROOT_USER = "postgres"

#: The MLflow server's database, also the name of its PostgreSQL role (each engine names its own).
MLFLOW_DATABASE = "mlflow"


@dataclass(frozen=True)
class StackPaths:
    """The files and directories of one stack."""

    root: Path

    @classmethod
    def of(cls, home: Path) -> StackPaths:
        return cls(home / "stack")

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """One pid file (JSON) per running service."""
        return self.root / "run"

    @property
    def postgres(self) -> Path:
        """Owned by the user the server runs as: data/ (the cluster), its log and socket.

        Under root the server runs as user postgres, which may not enter the home (a 0700
        /root): the cluster then lives in that user's own home directory, in a folder named
        after this stack's home, unless an older stack already has it under the home.
        """
        inside = self.root / "postgres"
        if os.geteuid() != 0 or (inside / "data" / "PG_VERSION").exists():
            return inside
        try:
            server_home = Path(pwd.getpwnam(RUN_AS_ROOT_USER).pw_dir)
        except KeyError:
            return inside
        key = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return server_home / "taxipipe-stacks" / key

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def tls(self) -> Path:
        """The Dask scheduler's CA, certificates and keys (`stack up --listen`)."""
        return self.root / "tls"

    @property
    def dask_roster(self) -> Path:
        """The names of every Dask worker that joined the scheduler (`stack.dask_roster`)."""
        return self.root / "dask-workers.json"

    @property
    def mlflow(self) -> Path:
        """MLflow's own files beside its database: the basic-auth app's config and user store."""
        return self.root / "mlflow"

    def engine_home(self, engine: str) -> Path:
        """Where one engine keeps its files (created by `create`)."""
        return self.root / engine

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def create(self, engines: Iterable[str] = ()) -> None:
        """The directories, with a home for each of `engines`, private to this user."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for directory in (self.logs, self.run, self.artifacts, self.mlflow, *map(self.engine_home, engines)):
            directory.mkdir(mode=0o700, exist_ok=True)


def token(nbytes: int = 24) -> str:
    """A new random password or key."""
    return secrets.token_urlsafe(nbytes)


def load_secrets(paths: StackPaths, databases: Iterable[str],
                 generate: Callable[[], Mapping[str, str]]) -> dict[str, str]:
    """The stack's passwords and keys, generated on first use and kept in a 0600 file: the
    superuser's, one per database (`db_NAME`), and what `generate` makes (the engines' keys).

    A key a newer taxipipe needs (a new service's role) is generated and added; the others stay.
    """
    kept = json.loads(paths.secrets.read_text()) if paths.secrets.exists() else {}
    values = {"postgres": token(), **{f"db_{name}": token() for name in databases}, **generate(), **kept}
    if values.keys() == kept.keys():
        return kept
    write_private(paths.secrets, json.dumps(values, indent=1))
    return values


def forget_secrets(paths: StackPaths, names: Collection[str]) -> None:
    """Drop `names` from the kept secrets, so the next `load_secrets` makes them anew."""
    if not paths.secrets.exists():
        return
    kept = json.loads(paths.secrets.read_text())
    write_private(paths.secrets, json.dumps({key: value for key, value in kept.items() if key not in names},
                                            indent=1))


def running_record() -> Path:
    """Where `up` records the running stack: $XDG_STATE_HOME/taxipipe/stack.json (~/.local/state)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "taxipipe" / "stack.json"


def record_running(home: Path, details: Mapping[str, Any]) -> None:
    """Note the home of the stack `up` starts, with details such as its ports (no secrets)."""
    path = running_record()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"home": str(home), **details}, indent=1))
    temporary.replace(path)


def read_running() -> dict | None:
    """The record of the running stack: its home and its runs' settings; None when there is none."""
    try:
        record = json.loads(running_record().read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "home" in record else None


def forget_running(home: Path) -> None:
    """Remove the record if it names this home (`down`)."""
    record = read_running()
    if record is not None and Path(record["home"]) == home:
        running_record().unlink(missing_ok=True)
