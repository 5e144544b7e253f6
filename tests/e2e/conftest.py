"""A small swarm on the real stack: Postgres, Redis, Celery workers, git hub, local sandboxes, fake LLM."""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentswarm.config import get_settings
from agentswarm.db import session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.sim_faults import parse_sim_faults
from agentswarm.demo.simulator import simulate
from agentswarm.git.hub import prepare_hub
from agentswarm.lifecycle.features import sync_features
from agentswarm.lifecycle.runs import start_run
from tests.e2e.voxelcraft import TARGET
from tests.support.waiting import wait_for  # noqa: F401  (re-exported for the e2e tests)

FEATURES = [
    {"id": "core-001", "category": "core", "title": "Vector type", "priority": 1, "dependencies": [],
     "files": ["src/core/vec.ts"], "description": "A 3D vector type.", "acceptance": ["tsc passes"]},
    {"id": "core-002", "category": "core", "title": "Vector maths", "priority": 2, "dependencies": ["core-001"],
     "files": ["src/core/vecmath.ts"], "description": "add/sub/scale.", "acceptance": ["tsc passes"]},
    {"id": "ui-001", "category": "ui", "title": "HUD text", "priority": 2, "dependencies": [],
     "files": ["src/ui/hud.ts"], "description": "A HUD.", "acceptance": ["tsc passes"]},
    {"id": "ui-002", "category": "ui", "title": "Coordinates in the HUD", "priority": 3,
     "dependencies": ["ui-001", "core-002"], "files": ["src/ui/coords.ts"], "description": "Shows xyz.",
     "acceptance": ["tsc passes"]},
]
CHECK = "import pathlib, sys\nbad = [p for p in pathlib.Path('src').rglob('*.ts') if not p.read_text().strip()]\nsys.exit(1 if bad else 0)\n"


@dataclass
class Swarm:
    root: Path
    hub: Path
    llm: FakeLLMServer
    env: dict[str, str]
    run_id: str = ""
    workers: list = field(default_factory=list)

    def git(self, *args: str) -> str:
        import subprocess

        return subprocess.run(["git", f"--git-dir={self.hub}", *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    def sandbox_dirs(self) -> list[Path]:
        base = self.root / "sandboxes"
        return [p for p in base.glob("*/*") if p.is_dir()] if base.exists() else []


def tiny_target(root: Path) -> Path:
    """The tiny product of the e2e swarms: four features, a check script, one source file."""
    target = root / "target"
    (target / "src").mkdir(parents=True)
    (target / "FEATURES.json").write_text(json.dumps({"project": "Tiny", "version": 1, "features": FEATURES}))
    (target / "AGENTS.md").write_text("# Agents\nWrite small TypeScript modules.\n")
    (target / "check.py").write_text(CHECK)
    (target / "src" / "index.ts").write_text("export {};\n")
    return target


@pytest.fixture
def swarm(tmp_path, db, redis_client, monkeypatch):
    """Target repo + hub + fake LLM + settings in this process and for the workers this test starts."""
    target = tiny_target(tmp_path)
    hub = tmp_path / "hub.git"
    llm = FakeLLMServer().start()
    env = {
        "HUB_PATH": str(hub), "TARGET_REPO_PATH": str(target), "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
        "LLM_BASE_URL": llm.url, "LLM_API_KEY": "sk-e2e-secret-key", "LLM_MAX_RETRIES": "1",
        "RECONCILE_INSTALL": "", "RECONCILE_COMMANDS": json.dumps(["python3 check.py"]),
        "HEARTBEAT_INTERVAL_S": "1", "MAX_WORKERS": "4", "MERGE_DELETE_BRANCH": "false",
        "AWS_SECRET_ACCESS_KEY": "aws-orchestrator-secret",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    prepare_hub(None, hub, target)
    s = Swarm(root=tmp_path, hub=hub, llm=llm, env=env)
    with session_scope(db) as db_s:
        sync_features(db_s, target / "FEATURES.json")
        s.run_id = start_run(db_s, get_settings()).id
    yield s
    llm.stop()
    get_settings.cache_clear()
    for k in env:
        os.environ.pop(k, None)


@pytest.fixture(scope="session")
def shared_deps(tmp_path_factory) -> Path:
    """One dependency cache for every gate test of the session (npm ci once per lock file)."""
    return tmp_path_factory.mktemp("gate-deps")


@pytest.fixture
def gated(tmp_path, db, redis_client, monkeypatch, shared_deps, celery_worker):
    """A VoxelCraft hub with a few features and the gate on; call it with the settings of the test."""
    started: list[FakeLLMServer] = []

    def make(features: list[dict], *, faults: str = "", fault_attempts: int = 0, **settings: str):
        target = tmp_path / "target"
        shutil.copytree(TARGET, target, ignore=shutil.ignore_patterns("node_modules", "dist", ".vite"))
        (target / "FEATURES.json").write_text(json.dumps({"project": "VoxelCraft", "version": 1,
                                                           "features": features}))
        hub = tmp_path / "hub.git"
        (tmp_path / "deps").symlink_to(shared_deps)
        llm = FakeLLMServer(simulator=functools.partial(simulate, faults=parse_sim_faults(faults),
                                                        fault_attempts=fault_attempts)).start()
        started.append(llm)
        env = {"HUB_PATH": str(hub), "TARGET_REPO_PATH": str(target), "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
               "LLM_BASE_URL": llm.url, "LLM_API_KEY": "sk-gate-e2e-key", "LLM_MAX_RETRIES": "1",
               "HEARTBEAT_INTERVAL_S": "1", "MAX_WORKERS": "3", "MERGE_DELETE_BRANCH": "false",
               "RECONCILE_INSTALL": "", "GATE": "batch", "GATE_PRESUBMIT": "on", "GATE_BATCH_WAIT_S": "1",
               "GATE_FULL_EVERY": "0", "MAX_ATTEMPTS": "3", **settings}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        prepare_hub(None, hub, target)
        with session_scope(db) as s:
            sync_features(s, target / "FEATURES.json")
            start_run(s, get_settings())
        return env, hub, llm

    yield make
    for llm in started:
        llm.stop()
    get_settings.cache_clear()
