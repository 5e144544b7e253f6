"""`agentswarm doctor --smoke`: one real task from plan to merged in a scratch run, on the real stack (a Celery
worker, a bubblewrap sandbox, the hub, this Postgres server and Redis), the gate off as in the other suites."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.simulator import role_of, simulate
from tests.support.env import PG_ADMIN, ROOT


def smoke(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "HUB_PATH": str(tmp_path / "hub.git"), "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
            "RECONCILE_INSTALL": "", **env}
    return subprocess.run([sys.executable, "-m", "agentswarm", "doctor", "--smoke", "--smoke-timeout", "120"],
                          cwd=ROOT, env=full, capture_output=True, text=True, timeout=400)


def scratch_databases() -> set[str]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        return {r[0] for r in conn.execute("select datname from pg_database where datname like 'agentswarm_doctor_%'")}


def test_smoke_lands_one_task_in_a_scratch_run_and_leaves_nothing(db, redis_client, tmp_path):
    before = scratch_databases()
    r = smoke(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for step in ("smoke setup", "smoke plan", "smoke work", "smoke merge"):
        assert any(line.startswith(f"✓ {step}") for line in r.stdout.splitlines()), (step, r.stdout)
    assert "main moved" in r.stdout and "src/engine/doctorSmoke.ts" in r.stdout
    assert not list(tmp_path.glob("doctor-smoke-*")), "the scratch directory is removed"
    assert scratch_databases() <= before, "the scratch database is dropped"
    assert not (tmp_path / "hub.git").exists(), "the run's hub is not made"


def _failing_worker(body: dict) -> dict:
    """The simulator, except that the worker gives up; the doctor's own probes are answered."""
    role = role_of(body)
    if role == "worker":
        return {"content": None, "tool_calls": [{"name": "finish", "arguments": {
            "status": "failed", "summary": "I cannot do this (scripted)"}}]}
    if role is not None:
        return simulate(body)
    if body.get("tools"):
        return {"content": None, "tool_calls": [{"name": "finish", "arguments": {"status": "complete",
                                                                                 "summary": "ok"}}]}
    return {"content": "ready"}


def test_a_smoke_run_whose_task_fails_names_the_stage_keeps_its_logs_and_exits_nonzero(db, redis_client, tmp_path):
    with FakeLLMServer(script=_failing_worker) as llm:
        r = smoke(tmp_path, LLM_BASE_URL=llm.url, LLM_MODEL="fake-glm")
    assert r.returncode == 1, r.stdout + r.stderr
    work = next(line for line in r.stdout.splitlines() if line.startswith("✗ smoke work"))
    assert "ended failed" in work and "logs kept in" in work
    assert "– smoke merge" in r.stdout and "NOT ready: 1 step failed (smoke work)" in r.stdout
    [kept] = list(tmp_path.glob("doctor-smoke-*"))
    assert (kept / "worker.log").exists()
