"""What Dagster loads (`dagster dev -m taxipipe.runners.dagster.definitions`): the job and its
monthly schedule.

The schedule runs on the 15th of every month, on the newest partition: the training month
whose validation month the TLC has surely published. Settings come from the usual layers
(`TAXIPIPE_CONFIG`, `TAXIPIPE_*` environment); the launchpad's resource config can override them.
"""

from dagster import Definitions, build_schedule_from_partitioned_job

from taxipipe.runners.dagster.job import taxi_duration_pipeline

monthly = build_schedule_from_partitioned_job(taxi_duration_pipeline, day_of_month=15, hour_of_day=6,
                                              name="taxi_duration_monthly")

defs = Definitions(jobs=[taxi_duration_pipeline], schedules=[monthly])
