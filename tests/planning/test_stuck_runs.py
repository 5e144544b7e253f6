"""A run with nothing runnable left ends (after a grace for a person) with the reason, instead of idling.

Driven by the real plan_tick against the fake LLM's simulated planner; the workers' side goes through the
real lifecycle (finish_task with a failed handoff; a landing recorded as the merge queue records one).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from agentswarm.agent.contract import Handoff
from agentswarm.control.steering import pause_run, retry_task
from agentswarm.db.models import Event, Feature, MainCheck, MergeAttempt, Run, Task
from agentswarm.db.session import session_scope
from agentswarm.db.states import OPEN, transition
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.lifecycle.features import mark_features_done, sync_features
from agentswarm.lifecycle.handoffs import finish_task
from agentswarm.planning.planner import plan_tick
from tests.planning.test_blocked import CHAIN
from tests.support.runs import start

FAILING = "world-001"


def _run(url: str, run_id: str) -> Run:
    with session_scope(url) as s:
        run = s.get(Run, run_id)
        s.expunge(run)
    return run


def _events(url: str, kind: str) -> list[Event]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))
        s.expunge_all()
    return rows


def _open(url: str, run_id: str) -> list[Task]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(Task).where(Task.run_id == run_id, Task.status.in_(OPEN))))
        s.expunge_all()
    return rows


def _tasks(url: str, run_id: str) -> list[Task]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(Task).where(Task.run_id == run_id)))
        s.expunge_all()
    return rows


def _attempt_fails(settings, task_id: str) -> str:
    """One attempt of the task, picked up as a worker would and handed off failed."""
    with session_scope(settings.database_url) as s:
        attempt = s.get(Task, task_id).attempts + 1
        assert transition(s, task_id, "pending", "assigned", attempts=attempt)
        assert transition(s, task_id, "assigned", "running")
    handoff = Handoff(task_id=task_id, status="failed", error="tsc: src/world/chunk.ts(3,1): error TS2304")
    return finish_task(task_id, attempt, None, handoff, settings)


def _lands(url: str, task_id: str) -> None:
    """The task completes and the merge queue lands it."""
    with session_scope(url) as s:
        for a, b in (("pending", "assigned"), ("assigned", "running"), ("running", "complete")):
            assert transition(s, task_id, a, b, attempts=1)
        task = s.get(Task, task_id)
        s.add(MergeAttempt(task_id=task_id, branch=task.branch, strategy="rebase", status="merged",
                           main_before="0" * 40, main_after="1" * 40, finished_at=datetime.now(UTC)))
        mark_features_done(s, task.feature_ids)


def _work(settings, run_id: str) -> None:
    """Every open task: the failing feature's attempts fail, the others land."""
    for task in _open(settings.database_url, run_id):
        if FAILING in task.feature_ids:
            _attempt_fails(settings, task.id)
        else:
            _lands(settings.database_url, task.id)


def _until_ended(settings, run_id: str, ticks: int = 12) -> list[dict]:
    reports = []
    for _ in range(ticks):
        reports.append(plan_tick(settings)["runs"].get(run_id, {}))
        if _run(settings.database_url, run_id).status != "active":
            break
        _work(settings, run_id)
    return reports


def _chain(url: str) -> None:
    with session_scope(url) as s:
        sync_features(s, {"features": CHAIN})


def test_a_feature_that_fails_for_good_blocks_its_dependents_and_the_run_ends_instead_of_idling(
        loaded, make_settings, redis_client):
    _chain(loaded)
    with FakeLLMServer() as fake:
        s = make_settings(llm_base_url=fake.url, max_attempts=2, reconcile_commands=[], run_stuck_grace_s=0)
        run_id = start(s)
        reports = _until_ended(s, run_id)
    run = _run(loaded, run_id)
    assert run.status == "stopped", reports
    # The planner tried the feature max_attempts times (each task using up its own attempts), then gave it up.
    with session_scope(loaded) as sess:
        tries = list(sess.scalars(select(Task).where(Task.feature_ids.contains([FAILING]))))
        assert [(t.status, t.attempts) for t in tries] == [("failed", 2), ("failed", 2)]
        features = {f.id: (f.status, f.blocked_by, f.status_reason) for f in sess.scalars(select(Feature))}
    assert features[FAILING][0] == "failed" and features[FAILING][2].startswith(
        "failed for good: 2 tasks ended without landing")
    assert features["world-002"] == ("blocked", FAILING, "waits for world-001, which failed for good")
    assert features["world-003"][:2] == features["world-004"][:2] == ("blocked", FAILING)
    assert {f for f, v in features.items() if v[0] == "done"} == {"core-001", "ui-001", "ui-002"}
    # What was blocked by what, in the events a person reads and in the run's stop reason.
    [needs] = _events(loaded, "feature.needs_person")
    assert needs.data["blocks"] == ["world-002", "world-003", "world-004"] and "agentswarm retry" in needs.message
    [stuck] = _events(loaded, "run.stuck")
    [ended] = _events(loaded, "run.ended")
    assert run.stop_reason.startswith("nothing runnable: world-001 failed for good: 2 tasks ended without landing")
    assert "(it blocks world-002, world-003, world-004)" in run.stop_reason
    assert stuck.message.startswith(run.stop_reason) and ended.message == run.stop_reason
    assert stuck.id < ended.id and reports[-1]["stopped"] == run.stop_reason
    # It ended at the first tick that found nothing runnable, not at the deadline.
    assert len(fake.requests) == 2  # everything ready, then world-001 once more
    assert [r.get("planned") for r in reports] == [4, None, 1, None, None] and "stuck" not in reports[-2]


def test_a_stuck_run_waits_its_grace_for_a_person_and_a_retry_gets_it_going(loaded, make_settings, redis_client):
    with FakeLLMServer() as fake:
        s = make_settings(llm_base_url=fake.url, max_attempts=1, reconcile_commands=[], run_stuck_grace_s=600)
        run_id = start(s)
        _until_ended(s, run_id, ticks=3)
        run = _run(loaded, run_id)
        assert run.status == "active" and run.config["stuck"]["reason"].startswith("nothing runnable: world-001")
        [stuck] = _events(loaded, "run.stuck")
        assert "The run stops at " in stuck.message and "unless a person acts" in stuck.message
        plan_tick(s)  # still stuck: one event only, the run still waits
        assert len(_events(loaded, "run.stuck")) == 1 and _run(loaded, run_id).status == "active"
        [failed] = [t for t in _tasks(loaded, run_id) if t.status == "failed"]
        with session_scope(loaded) as sess:
            retry_task(sess, s, failed.id)
        report = plan_tick(s)["runs"][run_id]
        assert "stuck" not in report and _events(loaded, "run.unstuck")
        assert "stuck" not in _run(loaded, run_id).config
        _attempt_fails(s, failed.id)  # the retry fails too: stuck again, and this time the grace runs out
        plan_tick(s)
        with session_scope(loaded) as sess:
            r = sess.get(Run, run_id)
            r.config = {**r.config, "stuck": {**r.config["stuck"], "since": (
                datetime.now(UTC) - timedelta(seconds=601)).isoformat()}}
        report = plan_tick(s)["runs"][run_id]
    assert _run(loaded, run_id).status == "stopped" and report["stopped"].startswith("nothing runnable: world-001")
    assert len(_events(loaded, "run.stuck")) == 2


def test_never_stuck_while_main_is_unchecked_or_red_work_is_in_flight_or_the_run_is_paused(
        loaded, make_settings, redis_client, hub):
    from agentswarm.git.hub import main_sha
    with FakeLLMServer() as fake:
        s = make_settings(llm_base_url=fake.url, max_attempts=1, run_stuck_grace_s=0)  # RECONCILE_COMMANDS set
        run_id = start(s)
        _until_ended(s, run_id, ticks=3)
        assert _run(loaded, run_id).status == "active"  # the reconciler has not seen main: it may yet make work
        with session_scope(loaded) as sess:
            sess.add(MainCheck(run_id=run_id, sha=main_sha(hub), result="red", started_at=datetime.now(UTC),
                               finished_at=datetime.now(UTC)))
        assert "stuck" not in plan_tick(s)["runs"][run_id] and _run(loaded, run_id).status == "active"
        [failed] = [t for t in _tasks(loaded, run_id) if t.status == "failed"]
        with session_scope(loaded) as sess:  # main is green now, but the retried task is in flight
            sess.add(MainCheck(run_id=run_id, sha=main_sha(hub), result="green", started_at=datetime.now(UTC),
                               finished_at=datetime.now(UTC)))
            retry_task(sess, s, failed.id)
            for a, b in (("pending", "assigned"), ("assigned", "running"), ("running", "complete")):
                transition(sess, failed.id, a, b, attempts=2)
        assert "stuck" not in plan_tick(s)["runs"][run_id]  # complete, not landed: the merge queue's turn
        with session_scope(loaded) as sess:
            transition(sess, failed.id, "complete", "blocked", error="the gate rejected it")
            pause_run(sess, run_id)
        assert plan_tick(s)["runs"][run_id]["skipped"] == "paused" and _run(loaded, run_id).status == "active"
        with session_scope(loaded) as sess:
            sess.get(Run, run_id).paused_at = None
        report = plan_tick(s)["runs"][run_id]
    assert _run(loaded, run_id).status == "stopped" and report["stopped"].startswith("nothing runnable: world-001")


def test_a_run_without_features_is_never_called_stuck(db, make_settings, redis_client):
    s = make_settings(reconcile_commands=[], run_stuck_grace_s=0)
    run_id = start(s)
    assert plan_tick(s)["runs"][run_id] == {"dispatched": 0, "skipped": "no feature is ready"}
    assert _run(db, run_id).status == "active"
