"""Redis stops while a handoff is stored: the send after the commit fails with Redis's own error, the other sends
after that commit still run, and the task merges once the monitor's recovery re-sends what Postgres says is pending.

The real stack (beat, control, reconcile, work and merge workers, the fake LLM) on a private redis-server that the
test stops from inside the handoff's transaction (the `handoff.store` chaos point) and starts again on its port.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from sqlalchemy import select

from agentswarm.db import Event, MergeAttempt, session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.queue.names import MERGE_BRANCH
from tests.e2e.conftest import tiny_target
from tests.e2e.test_restarts import WORKERS, _assert_landed_once, _env, _free_port, _start_swarm, _state
from tests.support.waiting import wait_for


def _events(url: str, kind: str) -> list[Event]:
    try:
        with session_scope(url) as s:
            return list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))
    except Exception:
        return []


def test_redis_stopped_while_a_handoff_is_stored_shows_its_error_and_the_task_still_merges(
        db, tmp_path, celery_worker, monkeypatch):
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    argv = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target, hub = tiny_target(tmp_path), tmp_path / "hub.git"
    chaos = tmp_path / "chaos"
    chaos.mkdir()
    try:
        with FakeLLMServer(latency_s=0.05) as llm:
            env = _env(db, target, hub, tmp_path, llm.url, REDIS_URL=f"redis://127.0.0.1:{port}/0",
                       AGENTSWARM_CHAOS_AT="handoff.store", AGENTSWARM_CHAOS_DIR=str(chaos),
                       AGENTSWARM_CHAOS_CMD=f"kill -KILL {redis.pid}", MONITOR_INTERVAL_S="1")
            beat, workers = _start_swarm(env, db, target, hub, tmp_path, celery_worker, monkeypatch)

            def supervise() -> None:
                """A worker the broker's loss ended is started again, as `make swarm`'s supervisor does."""
                for i, w in enumerate(workers):
                    if w.proc.poll() is not None:
                        queues, pool, n = WORKERS[i]
                        workers[i] = celery_worker(queues=queues, pool=pool, concurrency=n, env=env)

            try:
                merge = wait_for(lambda: next((e for e in _events(db, "message.send_failed")
                                               if e.data.get("what") == MERGE_BRANCH), None), timeout=180, every=0.3)
                assert (chaos / "struck-handoff.store").exists()
                redis.wait(timeout=10)
                redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_for(lambda: _state(db)[0] == "finished", timeout=300, every=1.0, tick=supervise)
            finally:
                beat.terminate()
                beat.wait(timeout=30)
            logs = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("worker-*.log")))
    finally:
        redis.kill()
        redis.wait(timeout=10)
    assert str(port) in merge.data["error"], merge.data  # Redis's own error: it could not connect
    assert "recovery sends it again" in merge.message
    line = merge.message
    assert line in logs
    assert "committed' state" not in logs and "InvalidRequestError" not in logs
    # The plan request was registered after the merge's send in the same transaction: it still ran (and found
    # Redis gone too, which it only logs).
    assert "plan request not sent" in logs[logs.index(line):]
    with session_scope(db) as s:
        merged = s.scalars(select(MergeAttempt).where(MergeAttempt.task_id == merge.task_id,
                                                      MergeAttempt.status == "merged")).all()
        resent = s.scalars(select(Event).where(Event.kind == "message.resent", Event.task_id == merge.task_id)).all()
        batch = merged[0].batch_id if merged else None
        mates = s.scalars(select(MergeAttempt.task_id).where(MergeAttempt.batch_id == batch,
                                                             MergeAttempt.task_id != merge.task_id)).all() if batch else []
    # Landed once: the monitor's recovery re-sent its lost message, or another task's merge gathered it into
    # its batch first (a complete, unlanded branch waits for no message of its own).
    assert len(merged) == 1 and (resent or mates), (resent, mates)
    _assert_landed_once(db, hub)
