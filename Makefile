# cql-runner developer commands. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
# Installed before the package so pip does not pull a multi-GB CUDA build on CPU machines.
# On a GPU machine, set TORCH_SPEC to the CUDA build you want (e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
# Extra flags for `cql-evidence run`, e.g. EVIDENCE_ARGS="--jobs 2 --minari-root ~/minari".
EVIDENCE_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install train test test-fast test-full lint bench evidence clean

help:  ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install cql-runner with dev tools (CPU torch first)

train: $(STAMP)  ## Train CQL on the embedded default dataset (no network needed)
	$(BIN)/cql-train

test: $(STAMP)  ## Run the default test suite (math, components, CLI end to end; < 10 min)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## Run the math and component tests only, for the edit-test loop (no subprocesses)
	$(BIN)/python -m pytest -q -m "(math or component) and not slow"

test-full: $(STAMP)  ## Run every test, including the ones marked slow
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)  ## Lint (ruff), check formatting (ruff format) and type-check src/ (mypy)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy

bench: $(STAMP)  ## Benchmark the CQL update against d3rlpy and the dataset's memory (bench.json, bench_memory.json)
	$(BIN)/python -m cql_runner.peers build --venv .peer-venv
	$(BIN)/python scripts/bench.py --json bench.json --peer-venv .peer-venv
	$(BIN)/python scripts/bench_memory.py --json bench_memory.json

evidence: $(STAMP)  ## Build datasets and run the CQL vs offline SAC vs BC evidence suite (hours; resumable)
	$(BIN)/cql-evidence run $(EVIDENCE_ARGS)

clean:  ## Remove run outputs and caches (keeps .venv)
	rm -rf runs multirun outputs .pytest_cache .ruff_cache bench.json bench_memory.json
