"""NYC taxi trip duration: train XGBoost on a TLC month, gate it, register it in MLflow.

Each run validates on the month three before its logical date (the newest month the TLC has
surely published by then, `taxipipe.partition.PUBLICATION_LAG_MONTHS`) and trains on the
month before that: the run of 2021-05-01 trains on 2021-01 and validates on 2021-02. The `color`, `year` and `month` params override that for a manual
trigger; `settings` takes any other setting as nested tables, e.g.
`{"data": {"url_template": "..."}, "model": {"preset": "zoomcamp"}}`.

Every task is one call into taxipipe's steps, which prints the task's line as it ends; XCom carries only their small records
(paths, row counts, metrics, the MLflow run id). Task functions have no return annotation
on purpose: TaskFlow reads `-> dict` as `multiple_outputs=True` and would push every key
of a record as its own XCom.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import (
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    conf,
    dag,
    task,
)

from taxipipe.errors import PERMANENT_ERRORS
from taxipipe.partition import Partition
from taxipipe.pipeline import BY_NAME, month_node, per_month_records
from taxipipe.runners.airflow.adapter import DAG_ID, run_node, step_context
from taxipipe.steps import Record

default_args = {
    "retries": 2,
    # Airflow's [core] default_task_retry_delay (300 s), doubled on every try. Set here because
    # a mapped task (extract) that does not set it falls back to 300 s, whatever the config says.
    "retry_delay": timedelta(seconds=conf.getint("core", "default_task_retry_delay")),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "retry_policy": ExceptionRetryPolicy(rules=[
        RetryRule(exception=list(PERMANENT_ERRORS), action=RetryAction.FAIL,
                  reason="a missing month, a bad file or bad data does not heal by retrying"),
    ]),
}


@dag(
    dag_id=DAG_ID,
    schedule="@monthly",
    start_date=datetime(2009, 3, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params={
        "color": Param(None, type=["null", "string"], enum=[None, "green", "yellow"],
                       description="taxi colour (empty: the configured one, green by default)"),
        "year": Param(None, type=["null", "integer"], minimum=2009,
                      description="training year (empty: from the logical date)"),
        "month": Param(None, type=["null", "integer"], minimum=1, maximum=12,
                       description="training month (empty: from the logical date)"),
        "settings": Param({}, type="object", description="other settings as nested tables"),
    },
    tags=["taxipipe", "mlflow", "xgboost"],
    doc_md=__doc__,
)
def taxi_duration_pipeline() -> None:
    @task
    def months():
        """The months the run reads (training months, then validation): one extract each."""
        return [month.label for month in step_context().settings.months]

    @task(retries=5)
    def extract(month: str):
        """Download one month into the download cache the partitions share."""
        ctx = step_context()
        return run_node(month_node("extract", Partition.parse(ctx.settings.data.color, month)), {}, ctx)

    @task
    def validate_data(downloads: list[Record]):
        # downloads[:] reads Airflow's lazy XCom sequence in one request
        return run_node(BY_NAME["validate_data"], per_month_records("extract", downloads[:]))

    @task
    def transform(checked: Record):
        return run_node(BY_NAME["transform"], {"validate_data": checked})

    @task
    def features(transformed: Record):
        return run_node(BY_NAME["features"], {"transform": transformed})

    @task(retries=1)
    def train(encoded: Record):
        return run_node(BY_NAME["train"], {"features": encoded})

    @task
    def validate_model(trained: Record):
        return run_node(BY_NAME["validate_model"], {"train": trained})

    @task
    def save(trained: Record, verdict: Record):
        return run_node(BY_NAME["save"], {"train": trained, "validate_model": verdict})

    @task
    def deploy(verdict: Record, saved: Record):
        return run_node(BY_NAME["deploy"], {"validate_model": verdict, "save": saved})

    @task
    def cleanup(deployed: Record):
        return run_node(BY_NAME["cleanup"], {"deploy": deployed})

    downloads = extract.expand(month=months())
    trained = train(features(transform(validate_data(downloads))))
    verdict = validate_model(trained)
    cleanup(deploy(verdict, save(trained, verdict)))


taxi_duration_pipeline()
