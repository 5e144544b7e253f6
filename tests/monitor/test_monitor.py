"""The monitor against the real Postgres, Redis (kombu's own message format) and local sandboxes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from agentswarm.config import load_settings
from agentswarm.db import Event, Run, Task, session_scope
from agentswarm.db.states import transition
from agentswarm.monitor.tick import monitor_tick
from agentswarm.queue.broker import queue_lengths, queued_task_ids
from agentswarm.queue.send import send_run_task
from agentswarm.sandbox.factory import backend_for

RUN_TASK = "agentswarm.tasks.run_task"


def _run(s) -> str:
    run = Run(max_tasks=100, max_tokens=10**7, max_dollars=10.0)
    s.add(run)
    s.flush()
    return run.id


def _task(s, run_id, scope, **kw) -> str:
    t = Task(run_id=run_id, description="d", branch="x", scope=scope, **kw)
    s.add(t)
    s.flush()
    t.branch = f"swarm/{t.id}"
    return t.id


def _age(s, tid, **cols):
    old = datetime.now(UTC) - timedelta(hours=1)
    s.execute(update(Task).where(Task.id == tid).values(**{c: old for c in cols}))


def test_broker_reader_sees_published_messages(db, redis_client):
    send_run_task("abc123", 3)
    send_run_task("def456", 10)
    assert queued_task_ids(redis_client, "work", RUN_TASK) == {"abc123", "def456"}
    assert queue_lengths(redis_client)["work"] == 2


def test_lost_messages_are_resent_once(db, redis_client, tmp_path):
    settings = load_settings(sandbox_root=tmp_path / "sb")
    with session_scope(db) as s:
        run_id = _run(s)
        lost = _task(s, run_id, ["a.ts"], enqueued_at=datetime.now(UTC))
        queued = _task(s, run_id, ["b.ts"], enqueued_at=datetime.now(UTC))
        _age(s, lost, enqueued_at=1)
        _age(s, queued, enqueued_at=1)
    send_run_task(queued, 5)  # this one's message is still in Redis
    out = monitor_tick(settings)
    assert out["resent"]["work"] == [lost]
    assert queued_task_ids(redis_client, "work", RUN_TASK) == {lost, queued}
    assert monitor_tick(settings)["resent"]["work"] == []  # just re-sent: not again


def test_stale_heartbeat_goes_back_to_pending_and_is_resent(db, redis_client, tmp_path):
    settings = load_settings(sandbox_root=tmp_path / "sb")
    backend = backend_for(settings)
    with session_scope(db) as s:
        run_id = _run(s)
        tid = _task(s, run_id, ["a.ts"])
        transition(s, tid, "pending", "assigned", attempts=1)
        transition(s, tid, "assigned", "running")
    sb = backend.create(run_id=run_id, task_id=tid, attempt=1, env={})
    with session_scope(db) as s:
        s.execute(update(Task).where(Task.id == tid).values(sandbox_id=sb.id))
        _age(s, tid, heartbeat_at=1)
    out = monitor_tick(settings)
    assert out["recovered"] == [tid]
    with session_scope(db) as s:
        t = s.get(Task, tid)
        assert t.status == "pending" and t.enqueued_at is not None and t.error == "worker lost"
    assert queued_task_ids(redis_client, "work", RUN_TASK) == {tid}
    assert backend.list(run_id) == []  # its sandbox was reaped


def test_decomposed_parent_is_not_timed_out(db, redis_client, tmp_path):
    settings = load_settings(sandbox_root=tmp_path / "sb")
    with session_scope(db) as s:
        run_id = _run(s)
        parent = _task(s, run_id, ["a.ts", "b.ts"])
        transition(s, parent, "pending", "assigned", attempts=1)
        transition(s, parent, "assigned", "running")
        _task(s, run_id, ["a.ts"], parent_id=parent)
        _age(s, parent, heartbeat_at=1)
    assert monitor_tick(settings)["recovered"] == []


def test_exhausted_attempts_fail(db, redis_client, tmp_path):
    settings = load_settings(sandbox_root=tmp_path / "sb")
    with session_scope(db) as s:
        run_id = _run(s)
        tid = _task(s, run_id, ["a.ts"], max_attempts=1)
        transition(s, tid, "pending", "assigned", attempts=1)
        transition(s, tid, "assigned", "running")
        _age(s, tid, heartbeat_at=1)
    monitor_tick(settings)
    with session_scope(db) as s:
        assert s.get(Task, tid).status == "failed"


def test_orphan_sandbox_is_reaped(db, redis_client, tmp_path):
    settings = load_settings(sandbox_root=tmp_path / "sb")
    backend = backend_for(settings)
    with session_scope(db) as s:
        run_id = _run(s)
    sb = backend.create(run_id=run_id, task_id="orphan1", attempt=1, env={})
    assert [i.id for i in backend.list(run_id)] == [sb.id]
    import agentswarm.monitor.recovery as mon

    old = mon.ORPHAN_GRACE_S
    mon.ORPHAN_GRACE_S = -1
    try:
        assert monitor_tick(settings)["reaped"] == [sb.id]
    finally:
        mon.ORPHAN_GRACE_S = old
    assert backend.list(run_id) == []
    with session_scope(db) as s:
        assert s.scalars(select(Event.kind).where(Event.kind == "sandbox.reaped")).all()


def test_a_task_with_a_beating_heart_is_left_alone(db, redis_client, tmp_path):
    import time

    from agentswarm.work.heartbeats import Heartbeats

    settings = load_settings(sandbox_root=tmp_path / "sb", stale_heartbeat_s=1.0)
    with session_scope(db) as s:
        run_id = _run(s)
        alive, dead = _task(s, run_id, ["a.ts"]), _task(s, run_id, ["b.ts"])
        for tid in (alive, dead):
            transition(s, tid, "pending", "assigned", attempts=1)
            transition(s, tid, "assigned", "running", sandbox_id=f"sb-{tid}")
    with Heartbeats(0.2).keep_alive(alive, f"sb-{alive}"):
        time.sleep(1.6)
        assert monitor_tick(settings)["recovered"] == [dead]
    with session_scope(db) as s:
        assert s.get(Task, alive).status == "running" and s.get(Task, dead).status == "pending"
