"""Celery entry points: ids in, the stage does the work. Each is safe to run twice.

Stages re-read Postgres and return when the work is already done; messages carry ids only.
Nothing imports this module but the Celery app (`include`): stages send by name
(`agentswarm.queue.send`), so no stage depends on its entry point.

Every task checks its arguments' shape before it runs (`queue.checked.CheckedTask`, the app's task class): a
message sent by hand with the wrong arguments fails in one log line, not a traceback. `run_task` and
`merge_branch` given an id that names no task log a warning and record an event naming it (`db.lookup`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from sqlalchemy.exc import InterfaceError, OperationalError

from agentswarm.errors import BadCall, BadRequest, ServiceUnavailable
from agentswarm.queue.app import app
from agentswarm.queue.names import (
    ADD_TASK,
    GATE_RUN,
    MERGE_BRANCH,
    MONITOR_TICK,
    PLAN_TICK,
    RECONCILE_TICK,
    RUN_TASK,
)

log = logging.getLogger(__name__)

# Postgres restarting, a dropped connection: the message is tried again with backoff, not dropped. Every handler
# is idempotent (stages re-read Postgres, the merge stage settles a half-done landing from git first).
DB_RETRY: dict[str, Any] = {"autoretry_for": (OperationalError, InterfaceError, ServiceUnavailable),
                            "retry_backoff": 1, "retry_backoff_max": 60, "retry_jitter": True, "max_retries": 30}


@app.task(name=PLAN_TICK)
def plan_tick(*, requested: bool = False) -> dict:
    """Beat, or sooner as a plan request (`requested`): plan more work for every active run that has room."""
    from agentswarm.planning.planner import plan_tick as stage

    return stage(requested=bool(requested))


@app.task(name=RUN_TASK, acks_late=True, reject_on_worker_lost=True, **DB_RETRY)
def run_task(task_id: str) -> str:
    """Work: drive one sandboxed agent through one task."""
    from agentswarm.work.stage import work_on

    return work_on(task_id)


@app.task(name=MERGE_BRANCH, acks_late=True, reject_on_worker_lost=True, **DB_RETRY)
def merge_branch(task_id: str) -> str:
    """Merge: land a complete task's branch on main."""
    from agentswarm.merge.queue import merge_task

    return merge_task(task_id)


@app.task(name=GATE_RUN, acks_late=True, reject_on_worker_lost=True, **DB_RETRY)
def gate_run(run_id: str) -> str:
    """Gate: run the merge queue's checks on one tree, in a fresh sandbox, under a lease (`merge.runs`)."""
    from agentswarm.merge.runs import take

    return take(run_id)


@app.task(name=RECONCILE_TICK)
def reconcile_tick(force: bool = False) -> dict:
    """Beat (and on demand): the slow checks of main; a red main's culprit reverted, or fix tasks."""
    from agentswarm.reconcile.tick import reconcile_tick as stage

    return stage(force=bool(force))


@app.task(name=ADD_TASK, bind=True, ignore_result=False, acks_late=True, reject_on_worker_lost=True,
          throws=(BadCall, BadRequest), **DB_RETRY)
def add_task(self: Task, **request: Any) -> str:
    """People: inject a fix or manual task; returns its id (the same id again for a repeated `key`).

    Keyword arguments: description (required), scope (paths), priority (1 most urgent..10, default 3),
    kind (fix|manual, default manual), key (makes a repeated call return the same task), title, run (a run id;
    default the active run). Checked exactly like `agentswarm add-task`; a bad one fails with one clear message.
    Without a key the message's own id is the key: a message delivered twice (a worker killed before it
    acknowledged) still makes one task.
    """
    from agentswarm.config import get_settings
    from agentswarm.control.steering import add_task_request, record_rejection
    from agentswarm.db.session import session_scope

    if request.get("key") is None and self.request.id:
        request["key"] = f"celery:{self.request.id}"
    try:
        with session_scope() as db:
            task, created = add_task_request(db, get_settings(), request)
            task_id, run_id, kind, priority = task.id, task.run_id, task.kind, task.priority
    except BadRequest as exc:  # the caller sees only an id: say why in the run's feed too
        with session_scope() as db:
            record_rejection(db, request, str(exc))
        raise
    log.info("add_task: %s %s task %s in run %s (priority %d)", "created" if created else "key seen before: returned",
             kind, task_id, run_id, priority)
    return task_id


@app.task(name=MONITOR_TICK)
def monitor_tick() -> dict:
    """Beat: time out stuck tasks, re-send lost messages, reap sandboxes, record metrics."""
    from agentswarm.monitor.tick import monitor_tick as stage

    return stage()
