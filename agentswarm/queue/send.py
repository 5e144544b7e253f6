"""Publishing by name: stages send messages through here, never by importing the entry points.

Every send happens after the session that made the row commits (`after_commit`), so a worker
can never receive an id whose row it cannot see yet.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from agentswarm.db.session import after_commit
from agentswarm.queue.names import GATE_RUN, MERGE_BRANCH, QUEUE_OF, RUN_TASK, celery_priority


def send(name: str, task_id: str, *, priority: int | None = None) -> None:
    """Publish task `name` for task_id on its queue now (priority 1..10, or the route's default)."""
    from agentswarm.queue.app import app  # the app reads settings: only a sender needs it

    options = {} if priority is None else {"priority": celery_priority(priority)}
    app.send_task(name, args=[task_id], queue=QUEUE_OF[name], **options)


def send_tick(name: str, *, expires_s: float | None = None, **kwargs: object) -> None:
    """Publish a tick on its queue now (a stage or a person asking sooner than beat would)."""
    from agentswarm.queue.app import app

    app.send_task(name, kwargs=kwargs, queue=QUEUE_OF[name], expires=expires_s)


def tick_after_commit(session: Session, name: str, *, expires_s: float | None = None) -> None:
    """Send a tick once the session commits."""
    after_commit(session, lambda: send_tick(name, expires_s=expires_s), what=name)


def send_run_task(task_id: str, priority: int) -> None:
    """Publish run_task(task_id) on `work` with the task's priority (call after commit)."""
    send(RUN_TASK, task_id, priority=priority)


def send_merge(task_id: str) -> None:
    """Publish merge_branch(task_id) on the merge queue (call after commit)."""
    send(MERGE_BRANCH, task_id)


def send_gate_run(run_id: str) -> None:
    """Publish gate_run(run_id) on the gate queue (its row is committed)."""
    send(GATE_RUN, run_id)


def run_task_after_commit(session: Session, task_id: str, priority: int) -> None:
    """Send run_task once the session commits (never if it rolls back)."""
    after_commit(session, lambda: send_run_task(task_id, priority), what=RUN_TASK, task_id=task_id)


def merge_after_commit(session: Session, task_id: str) -> None:
    """Send merge_branch once the session commits (never if it rolls back)."""
    after_commit(session, lambda: send_merge(task_id), what=MERGE_BRANCH, task_id=task_id)
