"""Each engine running an empty graph: nine no-op tasks in a chain, set up as taxipipe sets it up.

    python benchmarks/engine_floors.py airflow HOME     # dag.test(), metadata database in HOME/airflow
    python benchmarks/engine_floors.py prefect HOME     # a flow, temporary server, state in HOME/prefect
    python benchmarks/engine_floors.py dagster HOME     # execute_in_process, instance in HOME/dagster
    python benchmarks/engine_floors.py python HOME      # nine function calls (simple, make, script)

What a run of the pipeline costs beyond its steps and beyond this floor is what taxipipe's
adapter adds to the engine (bench_engines.py measures both).
"""

from __future__ import annotations

import sys
from pathlib import Path

TASKS = 9

AIRFLOW_DAG = f'''
from datetime import datetime

from airflow.sdk import chain, dag, task


@dag(dag_id="noop_chain", schedule=None, start_date=datetime(2021, 1, 1), catchup=False)
def noop_chain():
    @task
    def noop():
        return None

    chain(*[noop.override(task_id=f"noop_{{index}}")() for index in range({TASKS})])


noop_chain()
'''


def airflow(home: Path) -> None:
    from taxipipe.runners.airflow.adapter import migrate_once, use_airflow_home

    dags = home / "floor-dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "noop_chain.py").write_text(AIRFLOW_DAG)
    use_airflow_home(home / "airflow", dags)
    migrate_once(home / "airflow")
    from airflow.dag_processing.dagbag import DagBag

    run = DagBag(dag_folder=str(dags)).get_dag("noop_chain").test()
    assert str(run.state) == "success", run.state


def prefect(home: Path) -> None:
    from taxipipe.runners.prefect.local import configure

    configure(home)
    from prefect import flow, task

    @task
    def noop(previous: int) -> int:
        return previous + 1

    @flow(name="noop-chain")
    def noop_chain() -> int:
        value = 0
        for _ in range(TASKS):
            value = noop(value)
        return value

    assert noop_chain() == TASKS


def dagster(home: Path) -> None:
    from dagster import DagsterInstance, In, Nothing, job, op

    from taxipipe.runners.dagster.job import use_dagster_home

    use_dagster_home(home)
    ops = [op(name=f"noop_{index}", ins={"start": In(Nothing)})(lambda: None) for index in range(TASKS)]

    @job(name="noop_chain")
    def noop_chain() -> None:
        previous = None
        for noop in ops:
            previous = noop(start=previous) if previous is not None else noop()

    with DagsterInstance.get() as instance:
        assert noop_chain.execute_in_process(instance=instance).success


def python(home: Path) -> None:
    for noop in [lambda: None] * TASKS:
        noop()


ENGINES = {"airflow": airflow, "prefect": prefect, "dagster": dagster, "python": python}

if __name__ == "__main__":
    engine, home = sys.argv[1], Path(sys.argv[2])
    ENGINES[engine](home)
