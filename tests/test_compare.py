"""`taxipipe compare`: the runs each runner recorded, side by side, and the RMSE agreement check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taxipipe import tracking, walltime
from taxipipe.compare import (RunRow, champion_elsewhere, collect, compact_window, display_width, figure, report,
                              table, timing_warnings)
from taxipipe.pipeline import STEPS
from taxipipe.runners.simple import SimplePipeline
from tests.helpers import run_cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_two_runners_agree_then_a_divergent_run_is_flagged(make_settings, home: Path, tmp_path: Path) -> None:
    settings = make_settings()
    first = SimplePipeline(settings, runner="simple").run()
    second = SimplePipeline(settings, runner="script").run()
    SimplePipeline(settings, runner="partial", steps=STEPS[:5]).run()
    assert first["train"]["rmse"] == second["train"]["rmse"]

    plain = run_cli("compare", "--home", str(home), env={"COLUMNS": "100"})
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert max(display_width(line) for line in lines) <= 100 and "nan" not in plain.stdout
    assert "agree" not in plain.stdout
    head = next(line for line in lines if line.split()[:2] == ["#", "runner"] and "deploy" in line)
    partial = next(line for line in lines[lines.index(head):] if " partial " in line)
    for name in ("vmod", "save", "deploy", "cleanup"):  # numbers end where their header ends
        end = head.index(name) + len(name)
        assert not partial[end - len(name):end].strip(), f"{name}: steps partial did not run must be blank"
    assert float(partial[:head.index("train") + len("train")].split()[-1]) > 0

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
    for run in runners.values():
        assert run["compute"] == "memory"
        assert run["wall_seconds"] > run["steps_seconds"] == round(sum(run["step_seconds"].values()), 3)
        assert run["overhead_seconds"] == round(run["wall_seconds"] - run["steps_seconds"], 3) > 0

    client = tracking.client(settings)
    original = client.get_run(second["train"]["run_id"])
    divergent = client.create_run(original.info.experiment_id, tags=original.data.tags)
    for key, value in original.data.params.items():
        client.log_param(divergent.info.run_id, key, value)
    client.log_metric(divergent.info.run_id, "rmse", original.data.metrics["rmse"] + 0.01)
    flagged = run_cli("compare", "--home", str(home), "--check")
    assert flagged.returncode == 1
    assert "RMSE differs" in flagged.stdout


def test_empty_store_fails_the_check(home: Path, tmp_path: Path) -> None:
    result = run_cli("compare", "--home", str(home), "--check", "--plot", str(tmp_path / "none.png"))
    assert result.returncode == 1 and "no runs yet" in result.stdout
    assert "plot written" not in result.stderr and not (tmp_path / "none.png").exists()


def test_empty_home_is_left_alone_and_mlflow_is_not_loaded(home: Path) -> None:
    probe = ("import sys\nfrom taxipipe.cli import main\n"
             f"status = main(['compare', '--home', {str(home)!r}])\n"
             "print(status, 'mlflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "no runs yet" in result.stdout and result.stdout.splitlines()[-1] == "0 False"
    assert not home.exists()


STEP_TIMES = {step.name: 0.5 + 3 * index for index, step in enumerate(STEPS)}


def rows_of(runners: list[str], windows: list[str] | None = None, champion: int = 1) -> list[RunRow]:
    """Rows as `collect` makes them: the run `champion` (counted from 1) holds the alias."""
    windows = windows or ["green/2021-01"] * len(runners)
    steps = sum(STEP_TIMES.values())
    return [RunRow(runner, window, "xgboost", "categorical", "external", 6.0507, steps + 12.25 * (n + 1), steps,
                   12.25 * (n + 1), STEP_TIMES, f"{n:032x}", "2026-11-27 02:00", n + 1 == champion, "{}")
            for n, (runner, window) in enumerate(zip(runners, windows))]


def blocks(text: str) -> list[list[str]]:
    """The blocks of the tables: the lines from a header (`#  runner ...`) to the next blank line."""
    parts = [part.splitlines() for part in text.split("\n\n")]
    return [lines[index:] for lines in parts for index, line in enumerate(lines)
            if line.split()[:2] == ["#", "runner"]]


FIVE = ["simple", "make", "airflow", "prefect", "dagster"]
CASES = {
    "five runners": rows_of(FIVE, champion=2),
    "long window labels": rows_of(FIVE, ["green/2021-11..2022-04", "yellow/2023-01..2023-12", "green/2021-01",
                                         "green/2009-01..2026-09", "yellow/2024-03"], champion=5),
    "many runners": rows_of([f"{name}-variant-{n:02d}" for n in range(8) for name in FIVE], champion=33),
}


@pytest.mark.parametrize("width", [80, 100, 120])
@pytest.mark.parametrize("case", CASES)
def test_tables_fit_the_width_and_keep_every_value_in_its_row(case: str, width: int) -> None:
    rows = CASES[case]
    text = table(rows, width)
    assert max(display_width(line) for line in text.splitlines()) <= width
    found = blocks(text)
    assert len(found) >= 2
    for lines in found:
        assert len(lines) == len(rows) + 1, "a block holds the header and exactly one line per run"
        for number, (line, row) in enumerate(zip(lines[1:], rows), 1):
            assert line.split()[:2] == [str(number), row.runner], "every block keeps the run's key"
    runs = found[0]
    assert runs[0].split()[:2] == ["#", "runner"] and "RMSE" in runs[0]
    champion = next(n for n, row in enumerate(rows, 1) if row.champion)
    assert [n for n, line in enumerate(runs[1:], 1) if "🏆" in line] == [champion]
    values = runs[champion].split()
    assert values[-1] in ("🏆", "champion") and "6.0507" in values


@pytest.mark.parametrize("width", [80, 100, 120])
def test_five_runners_and_their_overhead_need_no_wrapping(width: int) -> None:
    rows = CASES["five runners"]
    found = blocks(table(rows, width))
    assert len(found) == 2, "one block of runs and one of step times"
    for line, row in zip(found[0][1:], rows):
        assert f"{row.wall_seconds:.1f}" in line.split() and f"{row.overhead_seconds:.1f}" in line.split()
    for line, row in zip(found[1][1:], rows):
        assert line.split()[-1] == f"{row.steps_seconds:.1f}"
    assert ("overhead s" in found[0][0]) == (width >= 100)
    assert "🏆" in found[0][2]


def test_a_narrow_terminal_wraps_columns_repeating_the_key() -> None:
    rows = CASES["many runners"]
    found = blocks(table(rows, 60))
    assert len(found) > 2
    for lines in found:
        for number, (line, row) in enumerate(zip(lines[1:], rows), 1):
            assert line.split()[:2] == [str(number), row.runner]


def test_windows_are_compacted_keeping_the_color_only_when_runs_differ_in_it() -> None:
    assert compact_window("green/2023-01..2023-03", drop_color=True) == "2023-01..03"
    assert compact_window("green/2021-11..2022-04", drop_color=False) == "green/2021-11..2022-04"
    assert compact_window("yellow/2024-03", drop_color=False) == "yellow/2024-03"
    assert compact_window("green/2024-03", drop_color=True) == "2024-03"
    assert display_width("🏆 champion") == 11


def test_missing_wall_time_is_a_dash_not_a_number() -> None:
    rows = rows_of(["simple", "airflow"])
    rows[1].wall_seconds = rows[1].overhead_seconds = None
    runs = blocks(table(rows, 120))[0]
    assert runs[2].split()[-2:] == ["-", "-"]


def test_the_width_is_columns_or_100_without_a_terminal() -> None:
    probe = "from taxipipe.compare import terminal_width; print(terminal_width())"
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    for columns, expected in ((None, "100"), ("80", "80")):
        env = {**environment, **({"COLUMNS": columns} if columns else {})}
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                                stdin=subprocess.DEVNULL, timeout=120)
        assert result.stdout.strip() == expected, result.stderr


def test_plot_labels_do_not_overlap_and_bars_split_steps_from_overhead() -> None:
    rows = CASES["long window labels"]
    chart = figure(rows)
    chart.canvas.draw()
    renderer = chart.canvas.get_renderer()
    left, right = chart.axes
    labels = [label for label in left.get_yticklabels() if label.get_text()]
    assert len(labels) == len(rows)
    boxes = [label.get_window_extent(renderer) for label in labels]
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert [label.get_text().startswith("★") for label in labels] == [row.champion for row in rows]
    legend = right.get_legend()
    names = [text.get_text() for text in legend.get_texts()]
    assert names[-1] == "engine overhead" and "train" in names
    bars = [patch.get_window_extent(renderer) for patch in right.patches]
    assert bars and not [bar for bar in bars if bar.overlaps(legend.get_window_extent(renderer))]
    overhead = right.containers[-1]
    assert [patch.get_width() for patch in overhead] == [row.overhead_seconds for row in rows]
    ends = [patch.get_x() + patch.get_width() for patch in overhead]
    assert ends == pytest.approx([row.wall_seconds for row in rows])


def test_reused_steps_are_not_counted_and_the_hidden_champion_is_named(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    client = tracking.client(settings)
    experiment = tracking.experiment_id(settings, client, "make")
    tags = {"runner": "make", "window": "green/2021-01", "model_kind": "xgboost", "feature_mode": "categorical"}
    earlier_times = {"extract": 4.0, "features": 3.0, "train": 5.0}
    champion = client.create_run(experiment, tags=tags)
    for name, seconds in earlier_times.items():
        client.log_metric(champion.info.run_id, f"step_seconds.{name}", seconds)
    client.log_metric(champion.info.run_id, "rmse", 6.0507)
    client.log_metric(champion.info.run_id, walltime.WALL_METRIC, 12.5)
    client.create_registered_model(settings.mlflow.model_name)
    version = client.create_model_version(settings.mlflow.model_name, str(tmp_path), champion.info.run_id)
    client.set_registered_model_alias(settings.mlflow.model_name, tracking.CHAMPION, version.version)

    deeper = client.create_run(experiment, tags={**tags, walltime.REUSED_TAG: "extract,features"})
    for name, seconds in {**earlier_times, "train": 2.5}.items():  # train logs its upstream's old times too
        client.log_metric(deeper.info.run_id, f"step_seconds.{name}", seconds)
    client.log_metric(deeper.info.run_id, "rmse", 6.1159)
    client.log_metric(deeper.info.run_id, walltime.WALL_METRIC, 3.0)

    text, status, plotted = report(settings, latest_only=True, as_machine=False, plot_path=None, check=False,
                                   width=120)
    assert status == 0 and not plotted
    runs, times = blocks(text)
    assert len(runs) == len(times) == 2, "only the latest run is listed"
    assert runs[1].split()[-2:] == ["3.0", "0.5"], "wall 3.0 s, overhead 3.0 - 2.5 s"
    assert times[1].split()[2:] == ["reused", "reused", "2.5", "2.5"]
    assert f"the champion ({settings.mlflow.model_name} version 1) is an earlier run" in text
    assert champion.info.run_id[:8] in text and "--all" in text
    assert "no champion" not in text and "🏆" not in text

    machine = json.loads(report(settings, True, True, None, False)[0])
    assert machine["runs"][0]["reused_steps"] == ["extract", "features"]
    assert machine["runs"][0]["step_seconds"] == {"train": 2.5} and machine["runs"][0]["overhead_seconds"] == 0.5
    assert champion.info.run_id[:8] in machine["champion_elsewhere"]

    chart = figure(collect(settings), [champion_elsewhere(settings, collect(settings))])
    assert "★" not in chart.axes[0].get_title(), "no bar carries the star the title would promise"
    assert any(champion.info.run_id[:8] in text.get_text() for text in chart.texts)
    every = report(settings, latest_only=False, as_machine=False, plot_path=None, check=False, width=120)[0]
    assert "the champion (" not in every and "🏆" in every


def test_single_runs_whose_times_cannot_be_compared_are_flagged() -> None:
    assert timing_warnings(rows_of(FIVE)) == []
    rows = rows_of(FIVE)
    rows[0].step_seconds = {**STEP_TIMES, "train": 22.4}
    rows[4].step_seconds = {**STEP_TIMES, "train": 3.2}
    rows[3].start_time = "2026-11-27 05:30"
    found = timing_warnings(rows)
    assert any("train took 3.2 s in run #5 and 22.4 s in #1" in line for line in found)
    assert any("#1 and #4 started 3.5 h apart" in line for line in found)
    assert "benchmarks/bench_engines.py" in found[-1]
    text = table(rows, 100, [f"⚠️  {line}" for line in found])
    assert max(display_width(line) for line in text.splitlines()) <= 100
    assert "train took 3.2 s" in " ".join(text.split())


def test_equal_rmse_is_said_on_the_rmse_panel() -> None:
    chart = figure(rows_of(FIVE, champion=2))
    assert chart.axes[0].get_xlabel() == "all 5 runs: RMSE 6.0507"
    assert not figure(rows_of(["simple", "make"]) + [RunRow(**{**vars(rows_of(["dagster"])[0]), "rmse": 6.1})]
                      ).axes[0].get_xlabel()
    assert chart.axes[0].get_title().endswith("★ champion")


def test_compare_offers_only_the_flags_it_uses() -> None:
    from taxipipe.cli import build_parser

    parser = build_parser()
    compare = parser._subparsers._group_actions[0].choices["compare"]
    flags = {option for action in compare._actions for option in action.option_strings}
    assert {"--home", "--config", "--tracking-uri", "--all", "--json", "--plot", "--check"} <= flags
    assert not flags & {"--year", "--month", "--model", "--color", "--url-template", "--engine"}
