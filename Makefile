# Entry points; every target that runs code bootstraps first (scripts/bootstrap.sh is idempotent and fast).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap run test lint bench soak catalog clean distclean

bootstrap:
	@scripts/bootstrap.sh

# The demo (local PostgreSQL + Kafka, worker, compactor, a producer, a live summary) runs for DEMO_ARGS'
# duration, checks the balances against what it sent and stops every server; `make run DEMO_ARGS=` streams
# until Ctrl-C.
DEMO_ARGS ?= --duration 20

run: bootstrap
	@echo "accumulator demo $(DEMO_ARGS)    (make run DEMO_ARGS= runs it until Ctrl-C)"
	@$(VENV)/bin/accumulator demo $(DEMO_ARGS)

test: bootstrap
	@scripts/tools.sh  # pinned helm, promtool, kubernetes-validate, hadolint, buildah (tests/deploy)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# make soak [SOAK_SEEDS=1,2,3,4]: the worker under random kill -9, long seeded streams (not in make test)
soak: bootstrap
	$(PY) -m pytest -q -m soak tests/integration/test_worker_soak.py

# make bench [SCENARIO=post_batch,hot_key] [BENCH_ARGS='--scale 0.1 --check']
bench: bootstrap
	$(PY) -m bench $(if $(SCENARIO),--only $(SCENARIO)) $(BENCH_ARGS)

# Regenerate tests/sql/expected_catalog.txt from a freshly migrated database; review the diff, commit.
catalog: bootstrap
	$(PY) -m pytest tests/sql/test_catalog.py --update-catalog

# Build outputs and caches. Keeps .venv, .tools (downloads) and .accumulator (demo data).
clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Everything `make run`/`make test` would re-create, including the demo's data.
distclean: clean
	rm -rf $(VENV) .tools .accumulator
