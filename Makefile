# Crowdline: `make run` serves the embedded default, `make test` runs the suite.
# Only python3 is assumed; everything else is installed into .venv from requirements*.txt.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstalled only when a requirements file is newer than this stamp.
STAMP := $(VENV)/.requirements-installed
HOST ?= 127.0.0.1
PORT ?= 8000
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-x -k ops"`.
PYTEST_ARGS ?=
# Test processes (pytest-xdist); 0 runs the suite in this process.
TEST_WORKERS ?= 2
# Options for the benchmark, e.g. `make bench BENCH_ARGS="--users 50"`.
BENCH_ARGS ?=

export FLASK_APP := wsgi.py

.PHONY: help venv run serve test lint fmt worker scheduler bench bench-all bench-quick clean distclean

help:
	@echo "make run        install, migrate, create the first admin, serve http://$(HOST):$(PORT)"
	@echo "make test       install and run the test suite (PYTEST_ARGS=... to pass options)"
	@echo "make lint       ruff check + ruff format --check"
	@echo "make fmt        ruff format + ruff check --fix"
	@echo "make worker     an RQ worker (needs REDIS_URL)"
	@echo "make scheduler  enqueue periodic jobs (needs REDIS_URL)"
	@echo "make bench      sign-in and authenticated-request benchmark"
	@echo "make bench-all  every benchmark at the issues' sizes (PostgreSQL; tens of minutes)"
	@echo "make bench-quick every benchmark at small sizes (PostgreSQL; a few minutes)"
	@echo "make clean      remove caches;  make distclean  also removes $(VENV)"

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

run: venv
	$(BIN)/flask db upgrade
	$(BIN)/flask crowdline ensure-admin
	@$(MAKE) --no-print-directory serve

# Serve without installing or migrating again (`make run` does both first).
serve:
	@echo "Crowdline on http://$(HOST):$(PORT)  (API docs: http://$(HOST):$(PORT)/api/v1/docs)"
	$(BIN)/gunicorn --workers 1 --threads 4 --bind $(HOST):$(PORT) \
		--access-logfile - --graceful-timeout 5 wsgi:app

test: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

worker: venv
	$(BIN)/flask rq worker

scheduler: venv
	$(BIN)/flask rq scheduler

bench: venv
	$(BIN)/python bench/bench_auth.py $(BENCH_ARGS)

# The database benchmarks need PostgreSQL (DATABASE_URL, or postgres@127.0.0.1 by default);
# bench_dawid_skene.py compares with Crowd-Kit only where bench/requirements-crowdkit.txt is
# installed (it says how).
BENCHES_PG := bench_eligibility bench_settlement bench_import bench_leasing

bench-all: venv
	$(BIN)/python bench/bench_auth.py
	for b in $(BENCHES_PG); do $(BIN)/python bench/$$b.py || exit 1; done
	$(BIN)/python bench/bench_dawid_skene.py

bench-quick: venv
	$(BIN)/python bench/bench_auth.py --users 20
	$(BIN)/python bench/bench_eligibility.py --workers 5000
	$(BIN)/python bench/bench_settlement.py --n 2000 --procs 2
	$(BIN)/python bench/bench_import.py --rows 50000
	$(BIN)/python bench/bench_leasing.py --quick
	$(BIN)/python bench/bench_dawid_skene.py --tasks 20000

clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache .hypothesis

distclean: clean
	rm -rf $(VENV)
