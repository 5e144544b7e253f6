"""A run to plan in: a real hub repository, a few features, settings, a started run (planning, lifecycle)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

FEATURES = [
    {"id": "core-001", "category": "core", "title": "Math helpers", "description": "vec3 helpers",
     "priority": 1, "status": "pending", "files": ["src/math/vec3.ts", "src/math/vec3.test.ts"],
     "dependencies": [], "acceptance": ["vec3 tests pass"]},
    {"id": "world-001", "category": "world", "title": "Chunk storage", "description": "blocks in a chunk",
     "priority": 2, "status": "pending", "files": ["src/world/chunk.ts", "src/world/chunk.test.ts"],
     "dependencies": [], "acceptance": ["chunk tests pass"]},
    {"id": "world-002", "category": "world", "title": "Chunk meshing", "description": "greedy meshing",
     "priority": 3, "status": "pending", "files": ["src/world/mesher.ts", "src/world/mesher.test.ts"],
     "dependencies": ["world-001"], "acceptance": ["mesher tests pass"]},
    {"id": "ui-001", "category": "ui", "title": "HUD", "description": "crosshair and hotbar",
     "priority": 5, "status": "pending", "files": ["src/ui/hud.ts"], "dependencies": [],
     "acceptance": ["hud renders"]},
    {"id": "ui-002", "category": "ui", "title": "Menu", "description": "pause menu",
     "priority": 6, "status": "pending", "files": ["src/ui/menu.ts"], "dependencies": [],
     "acceptance": ["menu opens on Escape"]},
]


def features_doc() -> dict:
    """A FEATURES.json document of the real shape."""
    return {"project": "VoxelCraft", "version": "1", "features": copy.deepcopy(FEATURES)}


@pytest.fixture
def hub(tmp_path) -> Path:
    """A real bare hub whose main holds a small source tree."""
    from agentswarm.git.hub import create_hub

    src = tmp_path / "src-repo"
    for rel in ("package.json", "src/index.ts", "src/engine/loop.ts", "README.md"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(f"// {rel}\n")
    create_hub(tmp_path / "hub.git", src)
    return tmp_path / "hub.git"


@pytest.fixture
def make_settings(hub):
    """Settings for a test: real services from the environment, the hub above, overrides on top."""
    from agentswarm.config import load_settings

    def make(**overrides):
        base = {"hub_path": hub, "max_workers": 10, "planner_batch_size": 5, "llm_max_retries": 0,
                "llm_timeout_s": 10.0}
        return load_settings(**{**base, **overrides})

    return make


@pytest.fixture
def loaded(db):
    """The features loaded into Postgres; returns the database URL."""
    from agentswarm.db.session import session_scope
    from agentswarm.lifecycle.features import sync_features

    with session_scope(db) as s:
        sync_features(s, features_doc())
    return db


def start(settings) -> str:
    """Start a run and return its id."""
    from agentswarm.db.session import session_scope
    from agentswarm.lifecycle.runs import start_run

    with session_scope(settings.database_url) as s:
        return start_run(s, settings).id


def work_queue_len(redis_client) -> int:
    """Messages waiting on the `work` queue, over all its priority lists."""
    return sum(redis_client.llen(k) for k in redis_client.keys("work*") if redis_client.type(k) == b"list")


@pytest.fixture
def active_run(loaded, hub, monkeypatch, redis_client):
    """An active run over the test hub, with this process's settings (HUB_PATH) pointing at it; its id."""
    from agentswarm.config import get_settings

    monkeypatch.setenv("HUB_PATH", str(hub))
    get_settings.cache_clear()
    yield start(get_settings())
    get_settings.cache_clear()
