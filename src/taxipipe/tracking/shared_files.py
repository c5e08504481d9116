"""A home's files through the tracking server's artifact proxy, so hosts need no shared disk.

When the tracking URI is a server (http or https), a file one step writes and a later step
reads, perhaps on another host, goes to the server's proxied artifact store
(`mlflow server --serve-artifacts`) under `intermediates/<run key>/<its path under the home>`,
and comes back only if it matches the digest its writer recorded. The run key (the engine's run
id, `StepContext.run_key`) keeps two runs of one window apart: each run's cleanup deletes its own
files and the ones it reused, never another run's. Both ways are streamed a chunk at a
time; credentials are MLflow's own (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or
MLFLOW_TRACKING_TOKEN), so a worker needs no bucket credentials. With any other tracking URI
(the embedded SQLite store) every call does nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, TypedDict
from urllib.parse import quote

from taxipipe.errors import SharedFileError, TrackingError
from taxipipe.hashing import FileHasher, FileState
from taxipipe.safety.atomic import atomic_path

if TYPE_CHECKING:
    from requests import Response

#: Where the server's artifact store keeps the homes' files, below its artifact root.
PREFIX = "intermediates"
_ENDPOINT = "/api/2.0/mlflow-artifacts/artifacts"
_CHUNK_BYTES = 1 << 20
#: The digests of the files this process hashed or fetched, trusted while size and mtime stay.
_HASHER = FileHasher({})
#: The servers found serving artifacts (`_check_serving`).
_SERVING: set[str] = set()


class SharedFile(TypedDict):
    """What the step that wrote a file recorded of it, and where it sent it (`remote_path`)."""

    sha256: str
    bytes: int
    remote: str


#: Shared files by their path under the home (`partitions/green/2021-01/model.bin`).
Manifest = dict[str, SharedFile]


def server(tracking_uri: str) -> str | None:
    """The tracking server's URL, or None when tracking is embedded (nothing is shared)."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else None


def key(home: Path, path: Path) -> str:
    """The name of a file of `home` in a manifest: its path under the home."""
    return path.relative_to(home).as_posix()


def manifest_of(records: Iterable[Mapping[str, Any]]) -> Manifest:
    """Every shared file that `records` (steps' records, later ones last) name."""
    return {name: file for record in records for name, file in record.get("shared_files", {}).items()}


def remote_path(run_key: str, name: str = "") -> str:
    """Where the server's artifact store keeps run `run_key`'s file `name` (a manifest key), or
    all of that run's files."""
    return f"{PREFIX}/{run_key}/{name}".rstrip("/")


def upload(tracking_uri: str, home: Path, paths: Iterable[Path], run_key: str) -> Manifest:
    """Send each of `paths` (files of `home`) that exists to the server's store, as run
    `run_key`'s; return their digests, sizes and remote paths."""
    uri = server(tracking_uri)
    if uri is None:
        return {}
    sent: Manifest = {}
    for path in paths:
        state = _HASHER.state(str(path), path)
        if state is None:
            continue
        name = key(home, path)
        where = remote_path(run_key, name)
        with open(path, "rb") as handle:
            _request(uri, where, "PUT", data=handle).close()
        sent[name] = {"sha256": state.sha256, "bytes": state.size, "remote": where}
    return sent


def fetch(tracking_uri: str, path: Path, expected: SharedFile) -> bool:
    """Make `path` (a file of the home) the file `expected` describes: kept if the home holds it
    already, otherwise fetched from the server's store and checked. True when it was fetched.

    A file whose size or digest differs is never put in place: it fails in one sentence.
    """
    uri = server(tracking_uri)
    if uri is None or _holds(path, expected):
        return False
    where = expected["remote"]
    digest, size = hashlib.sha256(), 0
    with atomic_path(path) as tmp:
        with _request(uri, where, "GET", stream=True) as answer, open(tmp, "wb") as out:
            for chunk in answer.iter_content(_CHUNK_BYTES):
                digest.update(chunk)
                size += out.write(chunk)
        if (digest.hexdigest(), size) != (expected["sha256"], expected["bytes"]):
            raise SharedFileError(
                f"{where} in the tracking server's artifact store ({size:,} bytes) is not the file "
                f"the run recorded ({expected['bytes']:,} bytes, sha256 {expected['sha256'][:12]}); "
                "run the pipeline again from the step that writes it")
    _HASHER.known[str(path)] = FileState(expected["sha256"], size, path.stat().st_mtime_ns)
    return True


def remove(tracking_uri: str, files: Manifest, run_key: str | None = None) -> list[str]:
    """Delete from the server's store the files `files` names (a run's own or ones it reused from
    earlier runs' records) and, given `run_key`, all of that run's; return the remote paths."""
    uri = server(tracking_uri)
    if uri is None:
        return []
    own = remote_path(run_key) if run_key else None
    reused = {file["remote"] for file in files.values() if own is None or not file["remote"].startswith(f"{own}/")}
    removed = ([own] if own else []) + sorted(reused)
    for where in removed:
        _request(uri, where, "DELETE").close()
    return removed


def _holds(path: Path, expected: SharedFile) -> bool:
    """Whether `path` is already the file `expected` describes (hashed only if its size fits)."""
    try:
        if path.stat().st_size != expected["bytes"]:
            return False
    except FileNotFoundError:
        return False
    state = _HASHER.state(str(path), path)
    return state is not None and state.sha256 == expected["sha256"]


def _request(uri: str, where: str, method: str, **kwargs: Any) -> Response:
    """One request about `where` (a remote path) to the artifact proxy with MLflow's credentials
    and retries; a server without the proxy, a refusal or a missing file is one sentence."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    credentials = get_default_host_creds(uri)
    if uri not in _SERVING:
        _check_serving(uri, credentials)
    answer = http_request(credentials, f"{_ENDPOINT}/{quote(where)}", method, **kwargs)
    if answer.ok:
        return answer
    answer.close()
    if answer.status_code in (401, 403):
        raise TrackingError(f"the tracking server {uri} refused access to its artifact store (HTTP "
                            f"{answer.status_code}); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    if answer.status_code == 404 and method == "GET":
        raise SharedFileError(f"{where} is not in the tracking server's artifact store at {uri}; "
                              "run the pipeline again from the step that writes it")
    raise TrackingError(f"the tracking server {uri} answered HTTP {answer.status_code} to {method} {where}; "
                        "check it and run again")


def _check_serving(uri: str, credentials: Any) -> None:
    """Fail at once, with the fix, when the server runs with `--no-serve-artifacts` (MLflow would
    retry its 503 answer for seconds to minutes); one unretried probe per server."""
    from mlflow.utils.rest_utils import http_request

    probe = http_request(credentials, _ENDPOINT, "GET", params={"path": PREFIX}, max_retries=0, raise_on_status=False)
    if probe.status_code == 503 and "--serve-artifacts" in probe.text:
        raise TrackingError(f"the tracking server {uri} does not serve artifacts, and the steps hand each other "
                            "files through it; start it with --serve-artifacts")
    _SERVING.add(uri)
