"""`taxipipe compare`: the runs each runner recorded, side by side, and the RMSE agreement check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from taxipipe import tracking
from taxipipe.compare import WIDTH, RunRow, figure
from taxipipe.pipeline import STEPS
from taxipipe.runners.simple import SimplePipeline
from tests.conftest import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_two_runners_agree_then_a_divergent_run_is_flagged(make_settings, home: Path, tmp_path: Path) -> None:
    settings = make_settings()
    first = SimplePipeline(settings, runner="simple").run()
    second = SimplePipeline(settings, runner="script").run()
    SimplePipeline(settings, runner="partial", steps=STEPS[:5]).run()
    assert first["train"]["rmse"] == second["train"]["rmse"]

    plain = run_cli("compare", "--home", str(home))
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert max(len(line) for line in lines) <= WIDTH and "nan" not in plain.stdout
    assert "agree" not in plain.stdout
    head = next(line for line in lines if line.split()[:2] == ["#", "runner"] and "deploy" in line)
    partial = next(line for line in lines[lines.index(head):] if " partial " in line)
    assert len(partial) <= head.index("train") + len("train"), "steps partial did not run must be blank"

    plot = tmp_path / "compare.png"
    result = run_cli("compare", "--home", str(home), "--check", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    assert "simple" in result.stdout and "script" in result.stdout
    assert "agree on RMSE" in result.stdout
    assert plot.read_bytes()[:8] == PNG_MAGIC

    machine = json.loads(run_cli("compare", "--home", str(home), "--json").stdout)
    runners = {run["runner"]: run for run in machine["runs"]}
    assert set(runners) == {"simple", "script", "partial"}
    assert runners["simple"]["champion"] is True and runners["script"]["champion"] is False  # same RMSE: kept
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


def test_empty_home_is_left_alone_and_mlflow_is_not_loaded(home: Path) -> None:
    probe = ("import sys\nfrom taxipipe.cli import main\n"
             f"status = main(['compare', '--home', {str(home)!r}])\n"
             "print(status, 'mlflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "no runs yet" in result.stdout and result.stdout.splitlines()[-1] == "0 False"
    assert not home.exists()


def test_plot_legend_does_not_cover_the_bars() -> None:
    steps = {step.name: 0.5 + index for index, step in enumerate(STEPS)}
    rows = [RunRow(runner, "green/2021-01", "xgboost", "categorical", 6.05, sum(steps.values()), steps, "0" * 32,
                   "2026-11-27 02:00", runner == "make", "{}") for runner in ("simple", "make", "airflow", "prefect")]
    chart = figure(rows)
    chart.canvas.draw()
    renderer = chart.canvas.get_renderer()
    right = chart.axes[1]
    legend = right.get_legend().get_window_extent(renderer)
    bars = [patch.get_window_extent(renderer) for patch in right.patches]
    assert bars and not [bar for bar in bars if bar.overlaps(legend)]
