"""The join file: what a worker on another host needs to join a stack (`taxipipe stack join`).

`stack up --listen ADDRESS` writes it (mode 0600) under HOME/stack/; it holds the servers'
addresses on ADDRESS and their credentials, so it is a secret like the stack's own. A worker
checks it before starting anything: the stack it names, the taxipipe code it was made by,
then the servers (see `stack/joining.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from taxipipe.errors import StackError
from taxipipe.safety.atomic import write_private

#: The join file's name under HOME/stack/: join-<stack id>.json.
PREFIX = "join-"


@dataclass(frozen=True)
class JoinFile:
    """The servers of one stack as a worker host reaches them, with their credentials."""

    stack_id: str
    #: `code_version()` of the taxipipe that wrote it; a worker running other code refuses to join
    taxipipe_version: str
    #: the address the servers listen on (`stack up --listen`)
    address: str
    mlflow_url: str
    mlflow_username: str
    mlflow_password: str
    prefect_api_url: str
    #: PREFECT_API_AUTH_STRING, `user:password`
    prefect_auth_string: str
    prefect_work_pool: str
    #: AIRFLOW__EDGE__API_URL, ending in /edge_worker/v1/rpcapi
    airflow_edge_api_url: str
    #: AIRFLOW__API_AUTH__JWT_SECRET, which signs the workers' tokens
    airflow_jwt_secret: str
    #: tls://ADDRESS:PORT
    dask_scheduler: str
    #: PEM text: the stack's certificate authority, and a worker's certificate and key it signed
    dask_ca_pem: str
    dask_cert_pem: str
    dask_key_pem: str
    #: the TAXIPIPE_* settings the stack's runs get (the URL template given to `up`, ...)
    runner_env: dict[str, str] = field(default_factory=dict)

    def name(self) -> str:
        return f"{PREFIX}{self.stack_id}.json"


def write(path: Path, join: JoinFile) -> None:
    """Write `join` to `path` atomically, readable by this user only."""
    write_private(path, json.dumps(asdict(join), indent=1))


def read(path: Path) -> JoinFile:
    """The join file at `path`; a missing, unreadable or foreign file is one sentence."""
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise StackError(f"no join file at {path}: copy the one `taxipipe stack up --listen` wrote "
                         "under the server's HOME/stack/") from None
    except (OSError, ValueError) as exc:
        raise StackError(f"{path} is not a taxipipe join file ({exc})") from None
    names = {item.name for item in fields(JoinFile)}
    if not isinstance(values, dict) or not names - {"runner_env"} <= values.keys():
        raise StackError(f"{path} is not a taxipipe join file (it lacks the stack's servers and credentials)")
    return JoinFile(**{key: value for key, value in values.items() if key in names})


def code_version() -> str:
    """The taxipipe code of this process: its version and a digest of its source files."""
    import taxipipe

    package = Path(taxipipe.__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(str(source.relative_to(package)).encode())
        digest.update(source.read_bytes())
    return f"{taxipipe.__version__}+{digest.hexdigest()[:12]}"


def check_version(join: JoinFile, path: Path) -> None:
    """Refuse a join file made by other taxipipe code than this host runs."""
    here = code_version()
    if join.taxipipe_version != here:
        raise StackError(f"{path} was made by taxipipe {join.taxipipe_version}, this host runs {here}: "
                         "install the server's version of taxipipe here (the same checkout or wheel)")
