"""Losing Redis's contents and killing workers mid-run loses no work: Postgres re-sends it."""

from __future__ import annotations

import signal
import time

from sqlalchemy import func, select

from agentswarm.db import Event, Feature, MergeAttempt, Task, session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.monitor.tick import monitor_tick
from agentswarm.planning.planner import plan_tick
from tests.support.waiting import wait_for


def _done(db_url) -> int:
    with session_scope(db_url) as s:
        return s.scalar(select(func.count()).where(Feature.status == "done"))


def _running(db_url) -> int:
    with session_scope(db_url) as s:
        return s.scalar(select(func.count()).where(Task.status == "running", Task.sandbox_id.is_not(None)))


def test_redis_flush_and_killed_workers_lose_nothing(swarm, db, redis_client, celery_worker, monkeypatch):
    from agentswarm.config import get_settings

    with FakeLLMServer(latency_s=0.4) as llm:  # slow enough that work is in flight when we strike
        env = {**swarm.env, "LLM_BASE_URL": llm.url, "STALE_HEARTBEAT_S": "3"}
        for k in ("LLM_BASE_URL", "STALE_HEARTBEAT_S"):
            monkeypatch.setenv(k, env[k])
        get_settings.cache_clear()
        work = celery_worker(queues="work", pool="threads", concurrency=2, env=env)
        celery_worker(queues="merge", pool="solo", env=env)

        def beat():
            plan_tick()
            monitor_tick()

        wait_for(lambda: _done(db) >= 1, timeout=90, every=0.5, tick=beat)
        plan_tick()
        # Strike while work is in flight (a task running in a sandbox, as Postgres says): Redis
        # loses every queued and unacknowledged message, and the work worker dies without a
        # chance to clean up.
        wait_for(lambda: _running(db) > 0, timeout=30, every=0.05, tick=plan_tick)
        redis_client.flushdb()
        work.kill(signal.SIGKILL)
        time.sleep(0.5)
        celery_worker(queues="work", pool="threads", concurrency=2, env=env)
        wait_for(lambda: _done(db) == 4, timeout=180, every=1.0, tick=beat)
    with session_scope(db) as s:
        tasks = s.scalars(select(Task)).all()
        merged = s.scalars(select(MergeAttempt).where(MergeAttempt.status == "merged")).all()
        recovered = s.scalars(select(Event.kind).where(Event.kind.in_(["task.recovered", "message.resent"]))).all()
    assert recovered, "the strike hit nothing in flight: the test proved nothing"
    done_tasks = [t for t in tasks if t.status == "complete"]
    assert sorted(f for t in done_tasks for f in t.feature_ids) == ["core-001", "core-002", "ui-001", "ui-002"]
    assert sorted(m.task_id for m in merged) == sorted(t.id for t in done_tasks)  # each landed once
    files = swarm.git("ls-tree", "-r", "--name-only", "main").splitlines()
    assert {"src/core/vec.ts", "src/core/vecmath.ts", "src/ui/hud.ts", "src/ui/coords.ts"} <= set(files)
