"""An attempt that finds nothing to change because its work is on main already ends the task as already done, not
failed or blocked; one with nothing to change and its features not done is blocked as before (real Postgres)."""

from __future__ import annotations

from sqlalchemy import select

from agentswarm.agent.contract import Handoff
from agentswarm.db.models import Event, Feature, MergeAttempt, Task
from agentswarm.db.session import session_scope
from agentswarm.lifecycle.handoffs import finish_task
from tests.support.runs import start


def _running(s, run_id: str, name: str, features: list[str]) -> str:
    t = Task(run_id=run_id, description=name, branch=f"swarm/{name}", status="running", attempts=1,
             feature_ids=features, scope=[f"src/{name}.ts"])
    s.add(t)
    s.flush()
    return t.id


def test_nothing_to_change_with_the_features_landed_by_another_task_is_already_done(loaded, make_settings,
                                                                                  redis_client, monkeypatch):
    monkeypatch.setattr("agentswarm.queue.send.send_run_task", lambda *a: None)
    settings = make_settings()
    run_id = start(settings)
    with session_scope(loaded) as s:
        landed = _running(s, run_id, "first", ["core-001"])
        s.get(Task, landed).status = "complete"
        s.add(MergeAttempt(task_id=landed, branch="swarm/first", strategy="fast-forward", status="merged"))
        s.get(Feature, "core-001").status = "done"
        again = _running(s, run_id, "again", ["core-001"])
        open_one = _running(s, run_id, "open", ["world-001"])
    for status in ("blocked", "failed"):  # the runner's "complete with no changes", or an agent that says failed
        with session_scope(loaded) as s:
            s.get(Task, again).status, s.get(Task, again).attempts = "running", 1 if status == "blocked" else 2
        h = Handoff(task_id=again, status=status, error="the agent reported complete but left no changes")
        assert finish_task(again, 1 if status == "blocked" else 2, None, h, settings) == "already-done"
        with session_scope(loaded) as s:
            t = s.get(Task, again)
            assert t.status == "cancelled" and t.summary == f"already done: its features landed with {landed}"
            assert s.get(Feature, "core-001").status == "done"
    with session_scope(loaded) as s:
        kinds = s.scalars(select(Event.kind).where(Event.task_id == again)).all()
    assert kinds.count("task.already_done") == 2
    h = Handoff(task_id=open_one, status="blocked", error="the agent reported complete but left no changes")
    assert finish_task(open_one, 1, None, h, settings) == "blocked"  # its feature is not done: a person looks
