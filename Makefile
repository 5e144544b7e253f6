# AgentSwarm: `make swarm` runs a swarm, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-slow test-all lint swarm services migrate doctor bench bench-gate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

services: install
	$(BIN)/agentswarm check

migrate: services
	$(BIN)/agentswarm db upgrade

doctor: install  # the checks before a run, one line each with the fix (`agentswarm doctor --smoke`: one real task too)
	$(BIN)/agentswarm doctor

test: install
	$(BIN)/python -m pytest

test-slow: install  # exit 5 = no test is marked slow right now
	$(BIN)/python -m pytest -m slow || [ $$? -eq 5 ]

test-all: install
	$(BIN)/python -m pytest -m ''

lint: install
	$(BIN)/ruff check agentswarm tests bench migrations infra
	$(BIN)/mypy

swarm: install
	$(BIN)/agentswarm swarm

bench: install
	$(BIN)/python bench/merge_queue.py

bench-gate: install  # the demo swarm with injected faults, gate on and off (about 30 minutes)
	$(BIN)/python bench/gated_swarm.py --workers 16 --seconds 600 --modes gate-on,gate-off,presubmit-off

clean:  # sandboxes a killed worker left hold mounts: release them first
	@if [ -d var ] && [ -x $(BIN)/python ]; then $(BIN)/python -m agentswarm.sandbox.leftovers var; fi
	rm -rf var .pytest_cache .ruff_cache
