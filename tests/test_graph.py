"""The graph every runner reads: per-month nodes, month arithmetic, and each engine's wiring.

Each engine's edges must equal the graph's, so a step added to `STEPS` and forgotten by an
engine fails here (the Airflow DAG's edges are checked in test_airflow_runner.py).
"""

from __future__ import annotations

import inspect
from datetime import date
from pathlib import Path

import pytest

from taxipipe.config import load_settings, merge
from taxipipe.errors import PipelineStateError
from taxipipe.partition import Partition, scheduled_training_month
from taxipipe.pipeline import BY_NAME, STEP_NAMES, STEPS, chain, edges, graph, run_step
from taxipipe.runners.make.runner import MakeRun
from taxipipe.runners.simple import SimplePipeline
from taxipipe.steps import StepContext


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(overrides={"home": str(tmp_path), "data": {"year": 2021, "month": 12}})


def test_each_month_a_run_reads_is_a_node_that_validate_data_waits_for(settings) -> None:
    nodes = graph(settings)
    assert [node.name for node in nodes[:3]] == ["extract[2021-12]", "extract[2022-01]", "validate_data"]
    assert nodes[2].upstream == ("extract[2021-12]", "extract[2022-01]")
    assert [node.month for node in nodes[:2]] == list(settings.months)
    assert [node.step_name for node in nodes] == ["extract", *STEP_NAMES]
    assert {name: {parent.split("[")[0] for parent in parents} for name, parents in edges(nodes).items()
            if "[" not in name} == {name: parents for name, parents in edges().items() if name != "extract"}
    ctx = StepContext(settings)
    assert nodes[1].writes(ctx) == [settings.home / "downloads" / "green_tripdata_2022-01.parquet"]


def test_a_target_names_a_step_or_one_month(settings) -> None:
    assert [node.name for node in chain("extract", graph(settings))] == ["extract[2021-12]", "extract[2022-01]"]
    assert [node.name for node in chain("extract[2022-01]", graph(settings))] == ["extract[2022-01]"]
    assert [node.name for node in chain("transform", graph(settings))][-2:] == ["validate_data", "transform"]
    with pytest.raises(KeyError):
        chain("nothing", graph(settings))


def test_extract_needs_its_month(settings) -> None:
    with pytest.raises(PipelineStateError, match="once per month"):
        run_step(BY_NAME["extract"], StepContext(settings), {}, hooks=())


def test_month_arithmetic_and_the_one_publication_lag() -> None:
    assert Partition("green", 2021, 12).shift(1) == Partition("green", 2022, 1)
    assert Partition("green", 2021, 1).shift(-13) == Partition("green", 2019, 12)
    assert Partition.parse("green", "2021-03") == Partition("green", 2021, 3)
    assert scheduled_training_month("green", date(2021, 5, 1)) == Partition("green", 2021, 1)
    assert scheduled_training_month("green", date(2021, 2, 15)) == Partition("green", 2020, 10)


def test_overrides_merge_key_by_key() -> None:
    base = {"data": {"year": 2021, "month": 1}, "home": "a"}
    assert merge(base, None, {"data": {"month": 2}}, {"model": {"params": {"max_depth": 3}}}) == {
        "data": {"year": 2021, "month": 2}, "home": "a", "model": {"params": {"max_depth": 3}}}
    assert base == {"data": {"year": 2021, "month": 1}, "home": "a"}


@pytest.mark.slow
def test_simple_and_make_runners_run_the_graph(settings) -> None:
    assert edges(SimplePipeline(settings).steps) == edges(graph(settings))
    assert edges(MakeRun(settings).chain) == edges(chain("deploy", graph(settings)))


def test_every_prefect_task_takes_its_steps_upstream_records() -> None:
    from taxipipe.runners.prefect.tasks import TASKS

    assert list(TASKS) == list(STEP_NAMES)
    for step in STEPS:
        parameters = list(inspect.signature(TASKS[step.name].fn).parameters)
        assert parameters[0] == "settings"
        assert tuple(parameters[1:]) == (("month",) if step.per_month else step.upstream), step.name
