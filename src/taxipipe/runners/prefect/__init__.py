"""Prefect 3: the flow, its tasks and policies, local settings, backfill, monitor-retrain flow and
environment.

Prefect reads its settings when first imported: `local.configure(home)` comes before any module
here that imports prefect.
"""
