"""The engines `taxipipe stack` runs, in start order: one line per engine folder."""

from __future__ import annotations

from taxipipe.runners.airflow.services import ENGINE as AIRFLOW
from taxipipe.runners.dagster.services import ENGINE as DAGSTER
from taxipipe.runners.prefect.services import ENGINE as PREFECT

ENGINES = (AIRFLOW, PREFECT, DAGSTER)
