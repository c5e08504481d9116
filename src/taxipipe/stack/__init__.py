"""`taxipipe stack`: PostgreSQL, an MLflow server, Airflow, Prefect and Dagster on 127.0.0.1.

state.py holds the paths under {home}/stack and the generated secrets, processes.py starts and
stops detached processes with pid files and logs, postgres.py runs the database cluster,
services.py declares the MLflow, Airflow, Prefect and Dagster processes, control.py ties up, down,
status and env together.
"""
