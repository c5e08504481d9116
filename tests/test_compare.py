"""`taxipipe compare`: the runs each runner recorded, side by side, and the RMSE agreement check."""

from __future__ import annotations

import json
from pathlib import Path

from taxipipe import tracking
from taxipipe.runners.simple import SimplePipeline
from tests.conftest import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_two_runners_agree_then_a_divergent_run_is_flagged(make_settings, home: Path, tmp_path: Path) -> None:
    settings = make_settings()
    first = SimplePipeline(settings, runner="simple").run()
    second = SimplePipeline(settings, runner="script").run()
    assert first["train"]["rmse"] == second["train"]["rmse"]

    plot = tmp_path / "compare.png"
    result = run_cli("compare", "--home", str(home), "--check", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    assert "simple" in result.stdout and "script" in result.stdout
    assert "agree on RMSE" in result.stdout
    assert plot.read_bytes()[:8] == PNG_MAGIC

    machine = json.loads(run_cli("compare", "--home", str(home), "--json").stdout)
    runners = {run["runner"]: run for run in machine["runs"]}
    assert set(runners) == {"simple", "script"}
    assert runners["script"]["champion"] is True and runners["simple"]["champion"] is False
    assert runners["script"]["step_seconds"]["train"] > 0

    client = tracking.client(settings)
    original = client.get_run(second["train"]["run_id"])
    divergent = client.create_run(original.info.experiment_id, tags=original.data.tags)
    for key, value in original.data.params.items():
        client.log_param(divergent.info.run_id, key, value)
    client.log_metric(divergent.info.run_id, "rmse", original.data.metrics["rmse"] + 0.01)
    flagged = run_cli("compare", "--home", str(home), "--check")
    assert flagged.returncode == 1
    assert "RMSE differs" in flagged.stdout


def test_empty_store_fails_the_check(home: Path) -> None:
    result = run_cli("compare", "--home", str(home), "--check")
    assert result.returncode == 1 and "no runs yet" in result.stdout
