"""Steering a running swarm as its users do: `celery call agentswarm.add_task` against a real control worker,
with the work queue already deep, and hand-made calls of the other tasks with bad ids or bad argument shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from celery.result import AsyncResult
from sqlalchemy import select

from agentswarm.db import Event, Task, session_scope
from agentswarm.queue.app import app
from agentswarm.queue.broker import queued_task_ids
from agentswarm.queue.names import RUN_TASK
from tests.support.env import ROOT
from tests.support.tasks import add_tasks, statuses
from tests.support.waiting import wait_for


def celery_call(env: dict[str, str], name: str, *, kwargs: dict | None = None, args: list | None = None) -> str:
    """The user's command line: `celery -A agentswarm.queue.app call NAME --kwargs JSON`; the Celery task id."""
    argv = [sys.executable, "-m", "celery", "-A", "agentswarm.queue.app", "call", name]
    if kwargs is not None:
        argv += ["--kwargs", json.dumps(kwargs)]
    if args is not None:
        argv += ["--args", json.dumps(args)]
    done = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def result_of(celery_id: str, timeout: float = 30.0):
    """What the task returned (or raised), read from the result backend as Flower and `AsyncResult` see it."""
    return AsyncResult(celery_id, app=app).get(timeout=timeout, propagate=False)


def test_celery_call_add_task_jumps_a_deep_work_queue_and_a_key_makes_no_twin(swarm, db, celery_worker, redis_client):
    queued = add_tasks(db, swarm.run_id, [[f"src/queued/m{i}.ts"] for i in range(4)], priority=5)
    assert queued_task_ids(redis_client, "work", RUN_TASK) == set(queued)
    control = celery_worker(queues="plan", env=swarm.env)
    request = {"description": "Fix: the HUD text overlaps the hotbar", "scope": ["src/ui/hud.ts"], "priority": 1,
               "kind": "fix", "key": "hud-overlap-1"}
    fix_id = result_of(celery_call(swarm.env, "agentswarm.add_task", kwargs=request))
    with session_scope(db) as s:
        fix = s.get(Task, fix_id)
        assert (fix.kind, fix.priority, fix.scope, fix.status, fix.request_key) == (
            "fix", 1, ["src/ui/hud.ts"], "pending", "hud-overlap-1")
        assert fix.enqueued_at is not None and fix.run_id == swarm.run_id
        assert s.scalar(select(Event.id).where(Event.task_id == fix_id, Event.kind == "task.created"))
    assert fix_id in queued_task_ids(redis_client, "work", RUN_TASK)
    again = result_of(celery_call(swarm.env, "agentswarm.add_task", kwargs={**request, "description": "once more"}))
    assert again == fix_id
    with session_scope(db) as s:
        assert s.scalar(select(Task.id).where(Task.request_key == "hud-overlap-1")) == fix_id
        assert len(s.scalars(select(Task.id).where(Task.run_id == swarm.run_id)).all()) == 5
    assert "raised" not in control.log() and "Traceback" not in control.log()

    celery_worker(queues="work", pool="threads", concurrency=1, env=swarm.env)
    wait_for(lambda: statuses(db, [fix_id])[fix_id] != "pending", timeout=60)
    with session_scope(db) as s:
        taken = s.scalars(select(Event.task_id).where(Event.kind == "task.assigned").order_by(Event.id)).all()
    assert taken[0] == fix_id, taken  # the priority-1 fix was taken before the priority-5 work queued earlier
    wait_for(lambda: statuses(db, [fix_id])[fix_id] == "complete", timeout=90)


def test_bad_calls_fail_in_one_line_and_unknown_ids_warn(swarm, db, celery_worker, redis_client):
    control = celery_worker(queues="plan", env=swarm.env)
    work = celery_worker(queues="work", pool="threads", concurrency=1, env=swarm.env)
    merge = celery_worker(queues="merge", env=swarm.env)
    bad = [
        ({"description": "x", "priority": 11}, "priority must be an integer from 1"),
        ({"description": "x", "kind": "feature"}, "kind must be one of fix, manual"),
        ({"description": "x", "scope": ["../../etc/passwd"]}, "leaves the repository"),
        ({"description": "x", "colour": "red"}, "unknown argument colour"),
        ({"scope": ["src/a.ts"]}, "description is required"),
        ({"description": "x", "run": "nosuchrun"}, "no run nosuchrun"),
    ]
    for kwargs, words in bad:
        outcome = result_of(celery_call(swarm.env, "agentswarm.add_task", kwargs=kwargs))
        assert isinstance(outcome, Exception) and words in str(outcome), (kwargs, outcome)
    outcome = result_of(celery_call(swarm.env, "agentswarm.add_task", args=["positional"], kwargs={}))
    assert type(outcome).__name__ == "BadCall" and "too many positional arguments" in str(outcome)
    with session_scope(db) as s:
        assert s.scalars(select(Task.id)).all() == []
    wait_for(lambda: control.log().count("raised expected") == len(bad) + 1, timeout=20)
    assert "Traceback" not in control.log()

    celery_call(swarm.env, "agentswarm.tasks.run_task", args=["nosuchtask1"])
    celery_call(swarm.env, "agentswarm.tasks.run_task", args=["../../etc; rm -rf /"])
    celery_call(swarm.env, "agentswarm.tasks.run_task", args=[{"task": "x"}])
    celery_call(swarm.env, "agentswarm.tasks.run_task", args=[])
    celery_call(swarm.env, "agentswarm.tasks.merge_branch", args=["nosuchtask2"])

    def unknown_events():
        with session_scope(db) as s:
            return s.scalars(select(Event.message).where(Event.kind == "task.unknown_id").order_by(Event.id)).all()

    messages = wait_for(lambda: len(unknown_events()) >= 3 and unknown_events(), timeout=30)
    assert "work_on: 'nosuchtask1' names no task; nothing done" in messages
    assert "work_on: '../../etc; rm -rf /' is not a task id; nothing done" in messages
    assert "merge_task: 'nosuchtask2' names no task; nothing done" in messages
    wait_for(lambda: work.log().count("raised expected") == 2, timeout=20)
    log = work.log()
    assert "WARNING" in log and "nosuchtask1" in log and "Traceback" not in log
    assert "the task id must be a string, got dict" in log and "missing a required argument: 'task_id'" in log
    assert "WARNING" in merge.log() and "nosuchtask2" in merge.log()
