"""Dagster: the job (`job.py`) and what Dagster loads (`definitions.py`)."""
