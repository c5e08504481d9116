"""The embedded MLflow store when several processes open it for the first time at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

OPEN_STORE = """
import sys
from taxipipe import tracking
from taxipipe.config import load_settings

settings = load_settings(overrides={"home": sys.argv[1]})
print(tracking.experiment_id(settings, tracking.client(settings), "airflow"))
"""


@pytest.mark.slow
def test_processes_creating_the_store_at_once_all_succeed(tmp_path: Path):
    processes = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(tmp_path)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(process.communicate(timeout=300), process.returncode) for process in processes]
    assert [code for _, code in results] == [0] * 4, [err[-500:] for (_, err), _ in results]
    assert len({out.strip() for (out, _), _ in results}) == 1
