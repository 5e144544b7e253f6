"""What the whole-swarm benchmarks share: a fresh database, the flat workload, `agentswarm swarm` run for a while
(or until every feature is done) and stopped, and the features' critical path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def fresh_db(name: str) -> str:
    """Drop and create database `name`; its SQLAlchemy URL."""
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def pg(url: str) -> psycopg.Connection:
    """An autocommit connection to the database of a SQLAlchemy URL."""
    return psycopg.connect(url.replace("+psycopg", ""), autocommit=True)


def flat_target(dest: Path, n: int) -> Path:
    """VoxelCraft's repository with `n` features that depend on nothing, one new file each."""
    shutil.copytree(ROOT / "target-repo", dest, ignore=shutil.ignore_patterns("node_modules", "dist", ".vite"))
    features = [{"id": f"flat-{i:04d}", "category": "flat", "title": f"Constant module {i}",
                 "description": f"Export a constant named value{i}.", "priority": 1 + i % 10, "status": "pending",
                 "files": [f"src/flat/m{i:04d}.ts"], "dependencies": [], "acceptance": ["tsc passes"]}
                for i in range(n)]
    doc = json.loads((dest / "FEATURES.json").read_text())
    doc["features"] = features
    (dest / "FEATURES.json").write_text(json.dumps(doc, indent=1))
    return dest


def run_swarm(env: dict[str, str], seconds: float, log_path: Path,
              probe: Callable[[], Any] | None = None, until: Callable[[], bool] | None = None) -> tuple[Any, Any]:
    """`agentswarm swarm` for `seconds` (or until `until()` is true, asked every second), then Ctrl-C (SIGKILL if it
    hangs); probe() just after start and before stop."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agentswarm.ops.cli", "swarm"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        first = probe() if probe else None
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                if until is not None and proc.poll() is None and _asked(until):
                    break
            return first, (probe() if probe else None)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _asked(until: Callable[[], bool]) -> bool:
    try:
        return until()
    except Exception:  # the database is not there yet (the swarm is still preparing): ask again
        return False


def done(url: str, stall_s: float = 0.0) -> bool:
    """Every feature done, or the run ended, or (with `stall_s`) nothing landed for that long since the last landing."""
    with pg(url) as conn:
        row = conn.execute("select count(*), count(*) filter (where status = 'done') from features").fetchone()
        finished = conn.execute("select count(*) from runs where status <> 'active'").fetchone()[0]
        idle = conn.execute("select extract(epoch from now() - max(finished_at)) from merge_attempts "
                            "where status = 'merged'").fetchone()[0]
    stalled = bool(stall_s) and idle is not None and float(idle) > stall_s
    return bool(row[0]) and (row[0] == row[1] or finished > 0 or stalled)


def critical_path(url: str, started: datetime) -> dict:
    """Links of the longest dependency chain, and each feature's ready-to-landed time."""
    with pg(url) as conn:
        deps = {fid: list(d or []) for fid, d in conn.execute("select id, dependencies from features").fetchall()}
        landed: dict[str, datetime] = {}
        for fids, at in conn.execute("select t.feature_ids, m.finished_at from merge_attempts m join tasks t "
                                     "on t.id = m.task_id where m.status = 'merged'").fetchall():
            for fid in fids or []:
                landed[fid] = min(at, landed.get(fid, at))
    depth: dict[str, int] = {}

    def links(fid: str, seen: frozenset[str] = frozenset()) -> int:
        if fid not in depth:
            depth[fid] = 1 + max((links(d, seen | {fid}) for d in deps.get(fid, []) if d in deps and d not in seen),
                                 default=0)
        return depth[fid]

    longest = max((links(f) for f in deps), default=0)
    link_times = []
    for fid, at in landed.items():
        ready = max([landed.get(d, started) for d in deps.get(fid, []) if d in deps] or [started])
        link_times.append(max(0.0, (at - ready).total_seconds()))
    median = statistics.median(link_times) if link_times else 0.0
    return {"links": longest, "median_link_s": round(median, 2), "critical_path_s": round(longest * median, 1),
            "features_landed": len(landed), "features": len(deps)}
