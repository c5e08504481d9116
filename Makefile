# The two commands: `make run` (the pipeline) and `make test` (the suite).
# Both create the environment (.venv, from the committed uv.lock) when it is missing.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP := $(VENV)/.synced-$(shell cat uv.lock pyproject.toml | cksum | cut -d' ' -f1)
ARGS ?=
TAXIPIPE_HOME ?= $(HOME)/.taxipipe

.PHONY: env run test bench mlflow-ui prefect-server clean help

help:
	@echo "make run        run the pipeline (simple runner; ARGS='--year 2021 --month 1 ...')"
	@echo "make test       run the test suite"
	@echo "make bench      the benchmarks against the reference pipeline (BENCH='green scaled')"
	@echo "make mlflow-ui  start the MLflow UI on the embedded store (127.0.0.1:5000)"
	@echo "make prefect-server  start a Prefect server and UI on 127.0.0.1:4200 (docs/prefect.md)"
	@echo "make env        create or update the environment only"
	@echo "make clean      remove the environment and caches (not ~/.taxipipe)"

env: $(STAMP)

$(STAMP): uv.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --frozen --all-extras --compile-bytecode
	@rm -f $(VENV)/.synced-* && touch $@

run: env
	$(BIN)/taxipipe run $(ARGS)

test: env
	$(BIN)/python -m pytest $(ARGS)

BENCH ?= green green-onehot scaled

bench: env
	for scenario in $(BENCH); do $(BIN)/python benchmarks/bench_pipeline.py $$scenario || exit 1; done

mlflow-ui: env
	$(BIN)/taxipipe ui $(ARGS)

prefect-server: env
	@mkdir -p $(TAXIPIPE_HOME)/prefect
	PREFECT_HOME=$(TAXIPIPE_HOME)/prefect \
	PREFECT_SERVER_MEMO_STORE_PATH=$(TAXIPIPE_HOME)/prefect/memo_store.toml \
	PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY=false \
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

clean:
	rm -rf $(VENV) .pytest_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
