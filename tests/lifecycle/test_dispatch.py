"""Overlapping scopes: a task whose scope overlaps one in flight is held, never sent alongside it."""

from __future__ import annotations

import json
import random

from sqlalchemy import select

from agentswarm.db.models import Task
from agentswarm.db.session import session_scope
from agentswarm.db.states import transition
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.lifecycle.dispatch import scopes_overlap
from agentswarm.planning.planner import plan_tick
from tests.support.runs import start, work_queue_len


def _task(fid, scope, title):
    return {"title": title, "description": "d", "scope": scope, "acceptance": [], "priority": 3,
            "feature_ids": [fid] if fid else []}


def _busy(sess, run_id) -> list[Task]:
    """Tasks sent to a worker or working (decomposed parents hold nothing)."""
    return [t for t in sess.scalars(select(Task).where(Task.run_id == run_id))
            if t.status in ("assigned", "running") or (t.status == "pending" and t.enqueued_at is not None)]


def test_overlapping_planned_tasks_are_held_until_the_first_ends(loaded, make_settings, redis_client):
    reply = json.dumps([_task("world-001", ["src/world"], "World module"),
                        _task("ui-001", ["src/world/chunk.ts", "src/ui/hud.ts"], "HUD over chunk"),
                        _task("core-001", ["src/math/vec3.ts"], "Vec3")])
    with FakeLLMServer(script=[reply]) as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        plan_tick(s)
    with session_scope(loaded) as sess:
        tasks = {t.title: t for t in sess.scalars(select(Task).where(Task.run_id == run_id))}
        assert tasks["World module"].enqueued_at is not None and tasks["Vec3"].enqueued_at is not None
        assert tasks["HUD over chunk"].enqueued_at is None and tasks["HUD over chunk"].status == "pending"
        held, first = tasks["HUD over chunk"].id, tasks["World module"].id
    assert work_queue_len(redis_client) == 2
    plan_tick(s)  # nothing changed: still held
    assert work_queue_len(redis_client) == 2
    with session_scope(loaded) as sess:
        for a, b in (("pending", "assigned"), ("assigned", "running"), ("running", "failed")):
            transition(sess, first, a, b)
    plan_tick(s)  # no model call needed: the tick dispatches held work first
    with session_scope(loaded) as sess:
        assert sess.get(Task, held).enqueued_at is not None
    assert work_queue_len(redis_client) == 3


def test_random_schedules_never_run_overlapping_scopes_together(loaded, make_settings, redis_client):
    """Plan ticks, takes and endings in random order: busy scopes never overlap at any step."""
    rng = random.Random(7)
    paths = ["src/a", "src/a/x.ts", "src/a/y.ts", "src/b.ts", "src/c/z.ts", "src/c", "src/d.ts"]
    def planner(body: dict) -> str:  # the model proposes a few tasks with random, often overlapping, scopes
        return json.dumps([_task(None, rng.sample(paths, rng.randint(1, 2)), f"p{rng.random()}")
                           for _ in range(rng.randint(0, 3))])

    fake = FakeLLMServer(script=planner).start()
    s = make_settings(max_workers=100, llm_base_url=fake.url)
    run_id = start(s)
    with session_scope(loaded) as sess:
        for i in range(30):
            scope = rng.sample(paths, rng.randint(1, 2))
            sess.add(Task(run_id=run_id, title=f"t{i}", description="d", scope=scope, branch=f"swarm/t{i}",
                          priority=rng.randint(1, 10)))
    for _ in range(80):
        with session_scope(loaded) as sess:
            step = rng.random()
            tasks = list(sess.scalars(select(Task).where(Task.run_id == run_id)))
            sent = [t for t in tasks if t.status == "pending" and t.enqueued_at is not None]
            running = [t for t in tasks if t.status == "running"]
            if step < 0.4 and sent:
                t = rng.choice(sent)
                transition(sess, t.id, "pending", "assigned")
                transition(sess, t.id, "assigned", "running")
            elif step < 0.8 and running:
                transition(sess, rng.choice(running).id, "running", rng.choice(["complete", "failed", "blocked"]))
        if step >= 0.6:
            plan_tick(s)
        with session_scope(loaded) as sess:
            busy = _busy(sess, run_id)
            for i, a in enumerate(busy):
                for b in busy[i + 1:]:
                    assert not scopes_overlap(a.scope, b.scope), (a.scope, b.scope)
    fake.stop()
    with session_scope(loaded) as sess:
        ended = sess.scalars(select(Task).where(Task.run_id == run_id, Task.status != "pending")).all()
        planned = sess.scalars(select(Task).where(Task.run_id == run_id, Task.title.like("p%"))).all()
    assert len(ended) >= 10 and len(planned) >= 5  # the schedule really moved work through
