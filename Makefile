# Two commands set up everything on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: provision run stop test lint typecheck check bench bench-ingest bench-aggregates

provision:
	@bash scripts/provision.sh

run: provision
	@$(PY) -m stack.run

stop:
	@$(PY) -m stack.run --stop

test: provision
	@$(PY) -m pytest

lint: provision
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

typecheck: provision
	@$(VENV)/bin/mypy

check: lint typecheck test

bench: provision
	@$(PY) -m bench.pipeline

# Only ingest's drain rates and their ceilings, in interleaved rounds (medians per figure).
bench-ingest: provision
	@$(PY) -m bench.ingest --rounds 3

# A year of data for 1,000 devices: about a quarter of an hour on two cores.
bench-aggregates: provision
	@$(PY) -m bench.aggregates
