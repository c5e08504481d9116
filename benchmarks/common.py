"""Helpers shared by the benchmarks: locate inputs, run a command, measure wall and peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TAXIPIPE_SHARED", REPO.parent / "shared"))
TLC = Path(os.environ.get("TAXIPIPE_TEST_DATA", SHARED / "data" / "tlc"))
REFERENCE = SHARED / "bench" / "reference_pipeline.py"
SCALER = SHARED / "bench" / "make_scaled_tlc.py"
WORK = REPO / "benchmarks" / "results"
TEMPLATE = "{color}_tripdata_{year}-{month:02d}.parquet"


@dataclass
class Measured:
    wall: float
    peak_rss_mb: float
    stdout: str


def measure(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Measured:
    """Run `command` to completion; return its wall time, peak RSS and output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, cwd=cwd,
                                   env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark command failed: {' '.join(command)}\n{stderr[-3000:]}")
    return Measured(wall, usage.ru_maxrss / 1024, stdout)


def require_inputs() -> None:
    for path in (REFERENCE, TLC):
        if not path.exists():
            sys.exit(f"{path} is missing: set TAXIPIPE_SHARED (bench scripts) or TAXIPIPE_TEST_DATA (months)")


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.3f}x" if theirs else "n/a"
