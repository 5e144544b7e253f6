"""Helpers for the end-to-end tests on VoxelCraft's own toolchain (the gate's, the reconciler's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import select

from agentswarm.db import Event, Feature, MergeAttempt, session_scope
from agentswarm.monitor.tick import monitor_tick
from agentswarm.planning.planner import plan_tick
from tests.support.env import ROOT

TARGET = ROOT / "target-repo"
GATE_INSTALL = "npm ci --ignore-scripts --no-audit --no-fund"


def feature(fid: str, name: str) -> dict:
    return {"id": fid, "category": "core", "title": f"The {name} module", "priority": 2, "dependencies": [],
            "files": [f"src/gate/{name}.ts", f"src/gate/{name}.test.ts"], "description": f"A {name} module.",
            "acceptance": ["tsc and its test pass"]}


def git(hub: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={hub}", *args], capture_output=True, text=True, check=True).stdout.strip()


def all_done(db) -> bool:
    with session_scope(db) as s:
        return all(f.status == "done" for f in s.scalars(select(Feature)))


def beat() -> None:
    plan_tick()
    monitor_tick()


def start_workers(celery_worker, env: dict[str, str]) -> None:
    celery_worker(queues="work", pool="threads", concurrency=3, env=env)
    celery_worker(queues="merge", pool="solo", env=env)


def green_trees(db) -> set[str]:
    with session_scope(db) as s:
        return {e.data["tree"] for e in s.scalars(select(Event).where(Event.kind == "gate.run"))
                if e.data.get("result") == "green"}


def assert_main_only_on_tested_trees(db, hub: Path) -> None:
    """Every value main took (each landing's main_after, and main now) is a tree the gate passed."""
    tested = green_trees(db)
    with session_scope(db) as s:
        values = {m.main_after for m in s.scalars(select(MergeAttempt).where(MergeAttempt.status == "merged"))
                  if m.main_after and m.batch_id}
    values.add(git(hub, "rev-parse", "main"))
    seed = git(hub, "rev-list", "--max-parents=0", "main")
    for sha in values - {seed}:
        assert git(hub, "rev-parse", f"{sha}^{{tree}}") in tested, f"main pointed at {sha[:12]}, never tested green"


def tsc_passes_on_main(hub: Path, tmp_path: Path, deps: Path) -> subprocess.CompletedProcess:
    """tsc on a clean export of main (the gate's tests run it in a sandbox; this is a check of the result)."""
    out = tmp_path / "main-check"
    out.mkdir()
    archive = subprocess.run(["git", f"--git-dir={hub}", "archive", "main"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    modules = next(deps.glob("*/node_modules"))
    (out / "node_modules").symlink_to(modules)
    return subprocess.run(["npx", "tsc", "--noEmit"], cwd=out, capture_output=True, text=True, timeout=300)
