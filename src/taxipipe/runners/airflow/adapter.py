"""The Airflow runner: what the DAG in dags/ needs beyond the TaskFlow graph itself.

A run's months come from its logical date (validate on the month three before it, train on
the month before that; `taxipipe.partition.PUBLICATION_LAG_MONTHS`) unless DAG params say
otherwise; the tasks rebuild the settings from that, so XCom carries only the steps' small
records. `run_in_process` runs the DAG with `dag.test()`, without scheduler or API server, in
an Airflow home under the project home.
Airflow itself is imported only inside the functions that need it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

from taxipipe.config import Settings, load_settings, merge
from taxipipe.errors import ConfigError, TaxipipeError
from taxipipe.partition import PUBLICATION_LAG_MONTHS, Partition, scheduled_training_month
from taxipipe.pipeline import STEPS, Step, per_month_records
from taxipipe.runners.airflow.environment import airflow_environment
from taxipipe.runners.session import Session, run_task
from taxipipe.steps import Record, StepContext, Upstream, run_key_of

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun

DAG_ID = "taxi_duration_pipeline"
RUNNER = "airflow"
INSTALL_HINT = "Airflow is not installed here: run `make env` (or `uv sync --extra airflow`)"


def training_partition(logical_date: datetime, color: str = "green") -> Partition:
    """The month a run trains on (2021-05-01 -> 2021-01; Airflow 3 starts a scheduled run
    at its logical date, see `scheduled_training_month`)."""
    return scheduled_training_month(color, logical_date)


def logical_date_for(partition: Partition) -> datetime:
    """The logical date of the run that trains on `partition` (the inverse of the above)."""
    month = partition.shift(PUBLICATION_LAG_MONTHS + 1)
    return datetime(month.year, month.month, 1, tzinfo=timezone.utc)


def settings_for(params: Mapping[str, Any], logical_date: datetime) -> Settings:
    """The settings of a run, from its params and logical date.

    Layers: defaults < $TAXIPIPE_CONFIG < TAXIPIPE_* env < the months of the logical date
    < the `settings` param (nested tables) < the `color`, `year` and `month` params.
    """
    month = training_partition(logical_date)
    given = {key: params[key] for key in ("color", "year", "month") if params.get(key) is not None}
    return load_settings(overrides=merge({"data": {"year": month.year, "month": month.month}},
                                         params.get("settings"), {"data": given}))


def step_context() -> StepContext:
    """The StepContext of the running task, tagged with the Airflow run id and try number."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    ti = context["ti"]
    logical_date = context.get("logical_date") or context["dag_run"].run_after
    return StepContext(settings_for(context["params"], logical_date), runner=RUNNER, tags={
        "airflow.dag_id": ti.dag_id, "airflow.run_id": ti.run_id, "airflow.try_number": str(ti.try_number),
    }, run_key=run_key_of(ti.dag_id, ti.run_id))


def run_node(step: Step, upstream: Upstream, ctx: StepContext | None = None) -> Record:
    """Run one node in the running task (`ctx`: its `step_context`) and print its line as it
    ends, so the run's lines keep their order with what the step printed meanwhile."""
    return run_task(step, ctx or step_context(), upstream)


def use_airflow_home(airflow_home: Path, dags_folder: Path) -> None:
    """Point Airflow at `airflow_home` and `dags_folder`, example DAGs off, quiet logs.

    Airflow reads its configuration when first imported: call this before.
    """
    airflow_home.mkdir(parents=True, exist_ok=True)
    os.environ.update(airflow_environment(airflow_home, dags_folder))
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")


def migrate_once(airflow_home: Path) -> None:
    """Create the metadata database on first use (`airflow db migrate`)."""
    if (airflow_home / "airflow.db").exists():
        return
    print(f"🗄️  Creating the Airflow metadata database in {airflow_home}", flush=True)
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout}{result.stderr}")


def run_example(settings: Settings, dags_folder: Path, started: float) -> dict[str, Record]:
    """Run the DAG once in this process (`dag.test()`) in an Airflow home under the project
    home, in a session that prints the common lines and records the wall time since `started`."""
    airflow_home = settings.home / "airflow"
    use_airflow_home(airflow_home, dags_folder)
    try:
        import airflow  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    with Session(settings, RUNNER, started=started) as session:
        session.begin(STEPS[-1].name)
        migrate_once(airflow_home)
        outcome = run_in_process(settings, dags_folder)
        for task_id in outcome.failed:
            session.failed(task_id, "the task log above says why")
        if outcome.state != "success":
            raise TaxipipeError(f"the DAG run ended '{outcome.state}'")
        return session.finish(outcome.records)


class Outcome(NamedTuple):
    """How an in-process run ended: its state, the tasks' records, the tasks that failed."""

    state: str
    records: dict[str, Record]
    failed: list[str]


def run_in_process(settings: Settings, dags_folder: Path) -> Outcome:
    """Run the DAG once with `dag.test()` on the months of `settings`.

    The logical date is the one a scheduled run of those months would have.
    """
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import TaskInstanceState

    bag = DagBag(dag_folder=str(dags_folder))
    if bag.import_errors:
        raise ConfigError(f"the DAG in {dags_folder} does not import: {bag.import_errors}")
    dag = bag.get_dag(DAG_ID)
    dag_run = dag.test(logical_date=logical_date_for(settings.partition),
                       run_conf={"settings": settings.model_dump(mode="json")})
    records = run_records(dag_run)
    records.update(per_month_records("extract", records.pop("extract", [])))
    records.pop("months", None)
    failed = sorted({ti.task_id for ti in dag_run.get_task_instances(state=[TaskInstanceState.FAILED])})
    return Outcome(str(dag_run.state), records, failed)


def run_records(dag_run: DagRun) -> dict[str, Record]:
    """The records the run's tasks returned, by task id (mapped tasks: a list)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    records: dict[str, Any] = {}
    with create_session() as session:
        query = XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, key="return_value")
        for xcom in session.scalars(query.order_by(None).order_by(XComModel.map_index)):
            value = XComModel.deserialize_value(xcom)
            if xcom.map_index >= 0:
                records.setdefault(xcom.task_id, []).append(value)
            else:
                records[xcom.task_id] = value
    return records
