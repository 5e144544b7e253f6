"""Sending work: pending tasks go to the `work` queue after commit, unless their scope is busy.

A paused run sends nothing: its pending tasks wait, unsent, until it is resumed.
A task whose scope overlaps the scope of a task in flight (or of one already sent) is held:
it stays pending with no message until the other ends, which keeps merge conflicts rare.
A task the root planner planned is also held while the run has no free worker slot (MAX_WORKERS tasks
sent or in flight): the planner keeps a small backlog ahead (PLANNER_BACKLOG), which waits here, unsent,
and goes the moment a task ends. Other tasks (a person's, fixes, conflicts, subtasks) do not wait for a slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from agentswarm.config import get_settings
from agentswarm.db.models import Run, Task, TaskStatus
from agentswarm.db.states import IN_FLIGHT
from agentswarm.queue.send import run_task_after_commit


def _norm(path: str) -> str:
    return path.strip().strip("/")


def scopes_overlap(a: Iterable[str], b: Iterable[str]) -> bool:
    """True when a path of one scope equals, contains or lies inside a path of the other."""
    left = [_norm(p) for p in a if _norm(p)]
    right = [_norm(p) for p in b if _norm(p)]
    for x in left:
        for y in right:
            if x == y or x.startswith(y + "/") or y.startswith(x + "/"):
                return True
    return False


def busy_scopes(session: Session, run_id: str, *, exclude: str | None = None,
                include_sent: bool = True) -> list[list[str]]:
    """Scopes held by this run's tasks in flight (and, with include_sent, already sent to a worker).

    A decomposed parent waits in `running` while its children work inside its scope, so it
    holds nothing itself.
    """
    child = select(Task.parent_id).where(Task.parent_id.is_not(None), Task.run_id == run_id)
    holding: ColumnElement[bool] = Task.status.in_(IN_FLIGHT)
    if include_sent:
        holding = holding | ((Task.status == TaskStatus.pending) & Task.enqueued_at.is_not(None))
    rows = session.execute(
        select(Task.id, Task.scope).where(Task.run_id == run_id, holding, Task.id.not_in(child))
    ).all()
    return [scope for tid, scope in rows if tid != exclude]


def enqueue(session: Session, task: Task) -> None:
    """Mark a pending task as sent and publish it once the session commits."""
    now = datetime.now(UTC)
    session.execute(update(Task).where(Task.id == task.id).values(enqueued_at=now))
    run_task_after_commit(session, task.id, task.priority)


def waits_for_slot(task: Task) -> bool:
    """A planner's task is sent only into a free worker slot (it may be part of the planner's backlog)."""
    return (task.context or {}).get("planned_by") == "planner"


def dispatch_pending(session: Session, run_id: str, limit: int | None = None, *,
                     slots: int | None = None) -> list[str]:
    """Send this run's unsent pending tasks whose scopes are free, most urgent first (none while it is paused).

    `slots`: the worker slots (default MAX_WORKERS); a planner's task is sent only while fewer tasks than that
    are sent or in flight.
    """
    if session.scalar(select(Run.paused_at).where(Run.id == run_id)) is not None:
        return []
    busy = busy_scopes(session, run_id)
    free = (get_settings().max_workers if slots is None else slots) - len(busy)
    pending = session.scalars(
        select(Task)
        .where(Task.run_id == run_id, Task.status == TaskStatus.pending, Task.enqueued_at.is_(None))
        .order_by(Task.priority, Task.created_at)
    ).all()
    sent: list[str] = []
    for task in pending:
        if limit is not None and len(sent) >= limit:
            break
        if any(scopes_overlap(task.scope, other) for other in busy):
            continue
        if free <= 0 and waits_for_slot(task):
            continue
        enqueue(session, task)
        busy.append(task.scope)
        sent.append(task.id)
        free -= 1
    return sent
