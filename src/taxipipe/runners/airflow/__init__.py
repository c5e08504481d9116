"""Airflow 3: the adapter the DAGs in dags/ call, its environment, and the stack's scheduler."""
