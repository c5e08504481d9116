"""Where the stack keeps its state under {home}/stack, and its generated secrets (a 0600 file)."""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

#: The database of each server, also the name of its PostgreSQL role.
DATABASES = ("mlflow", "airflow", "prefect", "dagster")


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
        """Owned by the user the server runs as: data/ (the cluster), its log and socket."""
        return self.root / "postgres"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    def log(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def create(self) -> None:
        """The directories, private to this user; root lets the postgres user pass through."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711 if os.geteuid() == 0 else 0o700)
        for directory in (self.logs, self.run, self.artifacts, self.airflow_home, self.prefect_home,
                          self.dagster_home):
            directory.mkdir(mode=0o700, exist_ok=True)


def _token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def _generate() -> dict[str, str]:
    return {
        "postgres": _token(),
        **{f"db_{name}": _token() for name in DATABASES},
        "airflow_admin": _token(12),
        "airflow_jwt_secret": _token(32),
        "airflow_secret_key": _token(32),
        "airflow_fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }


def load_secrets(paths: StackPaths) -> dict[str, str]:
    """The stack's passwords and keys, generated on first use and kept in a 0600 file.

    A key a newer taxipipe needs (a new service's role) is generated and added; the others stay.
    """
    kept = json.loads(paths.secrets.read_text()) if paths.secrets.exists() else {}
    values = {**_generate(), **kept}
    if values.keys() == kept.keys():
        return kept
    temporary = paths.secrets.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(values, file, indent=1)
    temporary.replace(paths.secrets)
    return values
