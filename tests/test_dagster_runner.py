"""The Dagster runner: the job built from the graph, its partitions and retries. Its real
in-process run is part of the engines' sweep (tests/test_run_examples.py); runs through the
webserver and `make dagster-ui` are in tests/test_stack.py and tests/test_make_servers.py."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from taxipipe.partition import Partition, scheduled_training_month
from taxipipe.pipeline import edges, month_node
from taxipipe.steps import StepContext
from tests.helpers import TlcServer


def test_the_job_is_the_graph() -> None:
    from taxipipe.runners.dagster.job import taxi_duration_pipeline

    upstream: dict[str, set[str]] = {}
    for node, inputs in taxi_duration_pipeline.graph.dependencies.items():
        upstream[node.name] = {dependency.node for definition in inputs.values()
                               for dependency in definition.get_node_dependencies()}
    # extract is mapped over the dynamic output of `months` (the months a run reads)
    assert upstream.pop("months") == set() and upstream["extract"] == {"months"}
    upstream["extract"].remove("months")
    assert upstream == edges(), "the job's ops and dependencies must be the graph's"


def test_partitions_are_training_months_the_newest_surely_published() -> None:
    from taxipipe.runners.dagster.job import PARTITIONS, job_for
    from taxipipe.runners.dagster.definitions import defs, monthly

    newest = scheduled_training_month("green", datetime.now(timezone.utc))
    assert PARTITIONS.get_last_partition_key() == f"{newest.label}-01"
    # the TLC's green records start in 2013-08 (yellow's in 2009-01): no partition before them
    assert PARTITIONS.get_first_partition_key() == "2013-08-01"
    assert job_for("yellow").partitions_def.get_first_partition_key() == "2009-01-01"
    assert monthly.cron_schedule == "0 6 15 * *"
    assert defs.get_job_def("taxi_duration_pipeline").partitions_def == PARTITIONS


def test_a_missing_month_fails_the_op_without_retries(make_settings, tlc_server: TlcServer) -> None:
    from dagster import Failure

    from taxipipe.runners.dagster.job import DOWNLOAD_RETRY, RETRY, _run

    assert RETRY.backoff is not None and DOWNLOAD_RETRY.max_retries > RETRY.max_retries
    settings = make_settings(data={"year": 2019, "month": 1, "download_retries": 0})
    asked_before = tlc_server.hits("green_tripdata_2019-01.parquet")
    with pytest.raises(Failure) as failed:
        _run(month_node("extract", Partition("green", 2019, 1)), StepContext(settings), {})
    assert failed.value.allow_retries is False
    assert "HTTP 404" in failed.value.description
    assert tlc_server.hits("green_tripdata_2019-01.parquet") == asked_before + 1


def test_launched_runs_fork_each_op_from_a_server_that_imported_the_libraries() -> None:
    """multiprocessing's fork server skips a preload module it cannot import: each must import."""
    import importlib

    from taxipipe.runners.dagster.job import STEP_IMPORTS, taxi_duration_pipeline

    assert taxi_duration_pipeline.executor_def.name == "multiprocess_forkserver"
    for module in STEP_IMPORTS:
        importlib.import_module(module)



def test_an_op_prints_its_line_as_its_step_ends(make_settings, capsys: pytest.CaptureFixture[str]) -> None:
    """Piped output keeps its order: each op prints its task line when its step ends, so a line
    written meanwhile (training progress on stderr) is not printed before every task line."""
    from taxipipe.runners.dagster.job import _run

    _run(month_node("extract", Partition("green", 2021, 1)), StepContext(make_settings()), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "   green/2021-01 downloaded (1,333,519 bytes)"
    assert lines[-1].startswith("✅ Task 'extract[2021-01]' completed in "), lines
