"""One job: causing faults and checking the answer, for the fault tests (children with fast
download retries, one-sentence failures, crafted months served over HTTP, real small or read-only
disks, commands on another home's store). What every test shares is in tests/helpers.py."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tests import forked
from tests.helpers import TlcServer, command_env, run_cli, start_cli, store_uri

MODEL = "nyc-taxi-duration"
FAST = {"TAXIPIPE_DATA__DOWNLOAD_BACKOFF_SECONDS": "0.01"}
#: Opens the store of each home given, in turn, and prints its experiment's id.
OPEN_STORE = """
import sys
from taxipipe import tracking
from taxipipe.config import load_settings

for home in sys.argv[1:]:
    print(f"opening the store of {home}", file=sys.stderr)
    settings = load_settings(overrides={"home": home})
    print(tracking.experiment_id(settings, tracking.client(settings), "simple"))
"""


def child_env(**extra: str) -> dict[str, str]:
    return command_env({**FAST, **extra})


def start_run(*args: str) -> forked.Child:
    """`taxipipe run ARGS` in the background, with FAST downloads."""
    return start_cli("run", *args, env=FAST)


def one_sentence_failure(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Exit 1, no traceback, a ❌ line naming each phrase; return that line."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith("❌")]
    assert lines, output[-3000:]
    for phrase in phrases:
        assert phrase in lines[-1], lines[-1]
    return lines[-1]


def served_folder(server: TlcServer, folder: str, files: dict[str, pa.Table | Path]) -> str:
    """Serve crafted months under /folder/ and return the URL template that reaches them."""
    root = server.root / folder
    root.mkdir(exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, root / name)
        else:
            pq.write_table(content, root / name)
    return f"http://127.0.0.1:{server.port}/{folder}/{{color}}_tripdata_{{year}}-{{month:02d}}.parquet"


def store_flags(store_home: Path, home: Path, template: str, month: int, year: int = 2021) -> list[str]:
    """CLI flags for a command on `home` with the MLflow store (and so the champion) of `store_home`."""
    return ["--home", str(home), "--tracking-uri", store_uri(store_home),
            "--url-template", template, "--year", str(year), "--month", str(month)]


def models(home_or_uri: Path | str) -> Any:
    from mlflow import MlflowClient

    uri = home_or_uri if isinstance(home_or_uri, str) else store_uri(home_or_uri)
    return MlflowClient(uri, registry_uri=uri)


# 6 -- one sentence for full and read-only disks, broken stores ------------------------------

ROOT = os.geteuid() == 0


@contextmanager
def small_disk(folder: Path, size_kb: int) -> Iterator[dict[str, Any]]:
    """A real disk of `size_kb` at `folder`: a tmpfs (as root), else a file-size limit for the child."""
    folder.mkdir(parents=True)
    if ROOT:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], check=True)
        try:
            yield {}
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size_kb * 1024, size_kb * 1024))

        yield {"preexec_fn": limit}


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for real: a read-only tmpfs as root (root ignores modes), else mode 0555."""
    folder.mkdir(parents=True, exist_ok=True)
    if ROOT:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


def run_with(args: list[str], **popen: Any) -> subprocess.CompletedProcess[str]:
    """`taxipipe ARGS` in a child with FAST downloads; forked unless it needs Popen's options."""
    if not popen:
        return run_cli(*args, env=FAST)
    return subprocess.run([sys.executable, "-m", "taxipipe", *args], capture_output=True, text=True,
                          env=child_env(), timeout=600, **popen)


