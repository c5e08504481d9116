# The two commands: `make run` (the pipeline) and `make test` (the suite).
# Both create the environment (.venv, from the committed uv.lock) when it is missing.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.synced-$(shell cat uv.lock pyproject.toml | cksum | cut -d' ' -f1)
ARGS ?=
# V=1: show what the tools say (uv's list of packages, Dagster's warnings); quiet by default.
V ?=
# COMPILE=0: leave the packages uncompiled (a quicker `make env`, slower first imports; the env test uses it).
COMPILE ?= 1
HOME_OF := $(BIN)/python -c 'from taxipipe.config import load_settings; print(load_settings().home)'
AIRFLOW_PORT ?= 8080
PREFECT_PORT ?= 4200
DAGSTER_PORT ?= 3000

.PHONY: env test-packages run test test-fast bench serve mlflow-ui airflow-ui prefect-server dagster-ui clean help

help:
	@echo "make run        run the pipeline (simple runner; ARGS='--year 2021 --month 1 ...')"
	@echo "make test       run the test suite"
	@echo "make test-fast  the suite without the slow tests (engine servers, whole runner runs)"
	@echo "make bench      the benchmarks against the reference pipeline (BENCH='green scaled')"
	@echo "make serve      serve the champion on 127.0.0.1:9696 (/predict, /invocations, /health, /metrics, /docs; ARGS='--port N')"
	@echo "make mlflow-ui  start the MLflow UI on the embedded store (127.0.0.1:5000)"
	@echo "make airflow-ui start Airflow (standalone) with the DAG in dags/ (127.0.0.1:AIRFLOW_PORT, 8080)"
	@echo "make prefect-server  start a Prefect server and UI on 127.0.0.1:PREFECT_PORT, 4200 (docs/prefect.md)"
	@echo "make dagster-ui start Dagster (dagster dev) with the job and its schedule (127.0.0.1:DAGSTER_PORT, 3000)"
	@echo "make env        create or update the environment only"
	@echo "make test-packages  install what the tests need from Debian (prometheus, chromium) when root"
	@echo "make clean      remove the environment and caches (not ~/.taxipipe)"

env: $(STAMP)

# uv gets the environment's real path, so the scripts' first lines stay valid when .venv is
# reached through a link (as in the docs test's copy of the checkout).
$(STAMP): uv.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@echo "Preparing the environment $(VENV) from uv.lock (about a minute; V=1 lists the packages)"
	@UV_PROJECT_ENVIRONMENT="$$(cd $(VENV) && pwd -P)" $(BIN)/uv sync --frozen --all-extras $(if $(filter 0,$(COMPILE)),,--compile-bytecode) $(if $(V),,--quiet)
	@rm -f $(VENV)/.synced-* && touch $@

# Debian packages the tests use beside Python (each named like its command): Prometheus with
# promtool (the shipped alerts and dashboard) and Chromium (renders the drift report).
# Installed with apt-get when missing and running as root; silent when present.
TEST_PACKAGES := prometheus chromium

test-packages:
	@missing=$$(for package in $(TEST_PACKAGES); do command -v $$package > /dev/null || printf ' %s' $$package; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get > /dev/null; then \
		echo "the tests need the Debian packages$$missing: install them as root (apt-get install$$missing)"; exit 0; fi; \
	echo "installing$$missing with apt-get"; \
	install="apt-get install -y -qq --no-install-recommends$$missing"; \
	DEBIAN_FRONTEND=noninteractive $$install > /dev/null || \
		{ apt-get update -qq > /dev/null && DEBIAN_FRONTEND=noninteractive $$install > /dev/null; }

run: env
	$(BIN)/taxipipe run $(ARGS)

# The suite runs in parallel workers: much of its time is spent waiting on servers and child
# processes, so four workers keep both cores busy (three were slower); `make test-fast`, whose
# tests wait less, runs three (57-59 s against 65 s with four, each worker's fork server of
# tests/forked.py costing more than it saved). TEST_WORKERS=N sets the number, 0 runs one process.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: every worker would otherwise rewrite
# the test modules' asserts again (about 4 s each) and every child process compile the package again.
# With both cores busy, each command trains with one OpenMP thread (XGBoost, Arrow and BLAS):
# more threads than cores only added waiting (1.2 s less CPU per run, the same RMSE to the last
# digit), and a waiting thread sleeps rather than spins (spinning burned 10-20 % more CPU).
TEST_WORKERS ?=
PYTEST := env -u PYTHONDONTWRITEBYTECODE OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE \
	$(BIN)/python -m pytest --dist loadfile --no-loadscope-reorder

test: env test-packages
	$(PYTEST) -n $(or $(TEST_WORKERS),4) $(ARGS)

test-fast: env test-packages
	$(PYTEST) -n $(or $(TEST_WORKERS),3) -m "not slow" $(ARGS)

BENCH ?= green green-onehot scaled

bench: env
	for scenario in $(BENCH); do $(BIN)/python benchmarks/bench_pipeline.py $$scenario || exit 1; done
	$(BIN)/python benchmarks/bench_make_uptodate.py
	$(BIN)/python benchmarks/bench_serve.py

serve: env
	$(BIN)/taxipipe serve $(ARGS)

mlflow-ui: env
	$(BIN)/taxipipe ui $(ARGS)

# Prefect's state lives in HOME/prefect (HOME: the taxipipe home, ~/.taxipipe by default).
prefect-server: env
	@home=$$($(HOME_OF)) && mkdir -p $$home/prefect && \
	PREFECT_HOME=$$home/prefect PREFECT_SERVER_MEMO_STORE_PATH=$$home/prefect/memo_store.toml \
	PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY=false DO_NOT_TRACK=1 \
	exec $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

# Airflow's state lives in HOME/airflow (HOME: the taxipipe home, ~/.taxipipe by default);
# tasks reach the API server's execution API on the same port. The components run as
# `airflow standalone` starts them, but the scheduler and triggerer without their log servers,
# which would listen on every interface (ports 8793, 8794): the API server reads the task logs
# from disk. Ctrl-C stops them all.
airflow-ui: env
	@set -e; home=$$($(HOME_OF)); \
	export AIRFLOW_HOME=$$home/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$(AIRFLOW_PORT)/execution/ \
	PATH=$(CURDIR)/$(BIN):$$PATH; \
	airflow db migrate > /dev/null; \
	echo "Airflow home $$AIRFLOW_HOME, UI on http://127.0.0.1:$(AIRFLOW_PORT)" \
	     "(user admin, password in $$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"; \
	trap 'kill $$(jobs -p) 2> /dev/null; wait' EXIT INT TERM; \
	airflow scheduler --skip-serve-logs & \
	airflow triggerer --skip-serve-logs & \
	airflow dag-processor & \
	airflow api-server & \
	wait

# Dagster's state lives in HOME/dagster (DAGSTER_HOME; HOME: the taxipipe home). Dagster 1.13
# recommends `dg dev` (package dagster-dg-cli, not part of this environment) over `dagster dev`
# and says so in a SupersessionWarning, a FutureWarning that stays hidden unless V=1.
dagster-ui: env
	@dagster_home=$$($(BIN)/python -c 'from taxipipe.config import load_settings; from taxipipe.runners.dagster.job import use_dagster_home; print(use_dagster_home(load_settings().home))') && \
	echo "Dagster home $$dagster_home, UI on http://127.0.0.1:$(DAGSTER_PORT)" && \
	DAGSTER_HOME=$$dagster_home PYTHONWARNINGS=$(if $(V),,ignore::FutureWarning) \
		exec $(BIN)/dagster dev -m taxipipe.runners.dagster.definitions \
		-h 127.0.0.1 -p $(DAGSTER_PORT)

clean:
	rm -rf $(VENV) .pytest_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
