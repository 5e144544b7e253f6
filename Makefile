# AgentSwarm: `make swarm` runs a swarm, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install agents test test-fast test-slow test-all lint docs swarm services migrate doctor bench bench-gate clean

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

# PYTEST_ARGS adds options to every tier, e.g. `make test PYTEST_ARGS=--durations=25` (what .ci/run does).
PYTEST_ARGS ?=

test: install  # every tier but slow: unit, integration, browser and e2e (tests/support/tiers.py)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install  # the inner loop: no e2e, slow, browser or integration tests
	$(BIN)/python -m pytest -m 'not e2e and not slow and not browser and not integration' $(PYTEST_ARGS)

test-slow: install  # the suites tests/support/tiers.py marks slow (about five minutes)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-all: install
	$(BIN)/python -m pytest -m '' $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check agentswarm tests bench migrations infra
	$(BIN)/mypy

docs: install  # docs/configuration.md from agentswarm/config.py (a test fails when they drift)
	$(BIN)/python -m agentswarm.config_doc

agents: install  # the external agent AGENT names (mini-swe-agent, pi), pinned, into AGENT_TOOLS_DIR
	$(BIN)/agentswarm agents install

swarm: install
	$(BIN)/agentswarm swarm

bench: install
	$(BIN)/python bench/merge_queue.py

bench-gate: install  # the demo swarm with injected faults, gate on and off (about 30 minutes)
	$(BIN)/python bench/gated_swarm.py --workers 16 --seconds 600 --modes gate-on,gate-off,presubmit-off

clean:  # sandboxes a killed worker left hold mounts: release them first
	@if [ -d var ] && [ -x $(BIN)/python ]; then $(BIN)/python -m agentswarm.sandbox.leftovers var; fi
	rm -rf var .pytest_cache .ruff_cache
