# Two commands set up everything on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: provision run run-cluster stop test test-clock-ahead lint typecheck check bench bench-ingest bench-aggregates bench-edges

provision:
	@bash scripts/provision.sh

run: provision
	@$(PY) -m stack.run

# The same with the city edge: a local 3-node RabbitMQ cluster in Mosquitto's place.
run-cluster: provision
	@$(PY) -m stack.run --edge cluster

stop:
	@$(PY) -m stack.run --stop

test: provision
	@$(PY) -m pytest

# The whole suite again with the clock a month, then a year ahead (libfaketime, inherited by the
# PostgreSQL, Mosquitto, api and browser processes the tests start): nothing may depend on the
# date the tests were written. The monotonic clock moves too: faking only the wall clock makes
# libfaketime 0.9.10 fail Python's time.sleep with EINVAL; and the shim below keeps Python's
# timed waits as long as their timeout (tests/clock/faketime_clockwait.c says why).
CLOCK_OFFSETS ?= +30d +365d
CLOCKWAIT := $(CURDIR)/.data/libfaketime_clockwait.so
$(CLOCKWAIT): tests/clock/faketime_clockwait.c
	@mkdir -p $(dir $@)
	@cc -shared -fPIC -O2 -Wall -o $@ $< -ldl
test-clock-ahead: provision $(CLOCKWAIT)
	@for offset in $(CLOCK_OFFSETS); do \
		echo "[test] clock $$offset"; \
		env -u FAKETIME_DONT_FAKE_MONOTONIC LD_PRELOAD="$(CLOCKWAIT)" \
			faketime -f "$$offset" $(PY) -m pytest || exit 1; \
	done

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

# Both edges side by side, Mosquitto and a private 3-node RabbitMQ cluster: about a quarter of
# an hour on two cores.
bench-edges: provision
	@$(PY) -m bench.edges

# A year of tiers and 30 days of minute raw for 1,000 devices, then the wide questions at 10,000
# devices, with ingest storing a live stream alongside (docs/benchmarks.md, Aggregates).
bench-aggregates: provision
	@$(PY) -m bench.aggregates
