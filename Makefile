# The two commands: `make run` (the whole stack on embedded defaults) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test chaos lint format typecheck bench bench-enqueue bench-throughput bench-bulk bench-peer bench-history bench-limits clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/provisioner dev

test: $(STAMP)
	$(VENV)/bin/pytest

# The full chaos run (CI runs a bounded one within `make test`).
chaos: $(STAMP)
	PROVISIONER_TEST_CHAOS_CONTACTS=500 $(VENV)/bin/pytest -m chaos -s

lint: $(STAMP)
	$(VENV)/bin/ruff check worker api_stub sandbox bench
	$(VENV)/bin/ruff format --check worker api_stub sandbox bench
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format worker api_stub sandbox bench
	$(VENV)/bin/ruff check --fix worker api_stub sandbox bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy worker/domain

# Every benchmark, one after the other, each printing its ratios against its ceiling
# (see bench/README.md and docs/benchmarks.md). Needs PostgreSQL and Redis on 127.0.0.1, and wrk.
bench: bench-enqueue bench-throughput bench-bulk bench-peer bench-history

bench-enqueue: $(STAMP)
	$(PY) bench/enqueue.py

bench-throughput: $(STAMP)
	$(PY) bench/throughput.py

bench-bulk: $(STAMP)
	$(PY) bench/bulk.py

# Ours beside the peer (bench/peer/: FastAPI + Celery, none of our guarantees), one table.
bench-peer: $(STAMP)
	$(PY) bench/versus.py

# Two accounts' batches at Twilio's per-account concurrency limit, ours beside the peer.
bench-limits: $(STAMP)
	$(PY) bench/at_limits.py

# The periodic passes and reads on an empty database and on 1,000,000 terminal contacts.
bench-history: $(STAMP)
	$(PY) bench/history.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
