"""The gate_hub fixture (a plugin of every test): a real bare hub with a run, and the gate configured on it."""

from __future__ import annotations

import json

import pytest

from agentswarm.config import get_settings
from agentswarm.db import Run, session_scope
from tests.git.hubkit import new_hub


@pytest.fixture
def gate_hub(tmp_path, monkeypatch, db):
    hub, root = new_hub(tmp_path / "hub.git", {"README.md": "seed\n"})

    def configure(commands: list[str], **extra: str):
        """The gate on this hub with these commands; serial (GATE_PARALLEL 1) unless `extra` says otherwise."""
        env = {"HUB_PATH": str(hub), "SANDBOX_ROOT": str(tmp_path / "sandboxes"), "GATE": "batch",
               "GATE_INSTALL": "", "GATE_COMMANDS": json.dumps(commands), "GATE_FULL_COMMANDS": "[]",
               "GATE_BATCH_WAIT_S": "0", "GATE_FULL_EVERY": "0", "GATE_PARALLEL": "1", "MERGE_DELETE_BRANCH": "false", **extra}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        return get_settings()

    with session_scope(db) as s:
        run = Run(max_tasks=100, max_tokens=10**9, max_dollars=10.0)
        s.add(run)
        s.flush()
        run_id = run.id
    yield hub, root, run_id, configure
    get_settings.cache_clear()
