"""Settling a decomposed parent: it waits in `running` and ends when its children have all ended."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.db.events import record_event
from agentswarm.db.models import Task, TaskStatus
from agentswarm.db.states import TERMINAL, transition
from agentswarm.lifecycle.features import mark_features_failed


def children_of(session: Session, parent_id: str) -> list[Task]:
    """The children of a task, oldest first, freshly read."""
    return list(session.scalars(select(Task).where(Task.parent_id == parent_id).order_by(Task.created_at)
                                .execution_options(populate_existing=True)))


def _summary(children: list[Task]) -> str:
    counts: dict[str, int] = {}
    for c in children:
        counts[c.status] = counts.get(c.status, 0) + 1
    head = "children: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines = [f"- {c.id} {c.title[:80]}: {(c.error or c.summary or '')[:200]}"
             for c in children if c.status != TaskStatus.complete]
    return "\n".join([head, *lines])[:4000]


def settle_parent(session: Session, parent_id: str) -> str | None:
    """When every child has ended, move the running parent to complete/failed/blocked; else None. Idempotent."""
    session.flush()
    parent = session.scalar(select(Task).where(Task.id == parent_id).with_for_update()
                            .execution_options(populate_existing=True))
    if parent is None or parent.status != TaskStatus.running:
        return None
    children = children_of(session, parent_id)
    if not children or any(c.status not in TERMINAL for c in children):
        return None
    statuses = {c.status for c in children}
    if statuses == {TaskStatus.complete}:
        final = TaskStatus.complete
    elif TaskStatus.failed in statuses:
        final = TaskStatus.failed
    else:
        final = TaskStatus.blocked
    summary = _summary(children)
    if not transition(session, parent_id, TaskStatus.running, final, summary=summary,
                      error=None if final is TaskStatus.complete else summary):
        return None
    record_event(session, f"task.{final}", summary.splitlines()[0], run_id=parent.run_id, task_id=parent_id,
                 children={c.id: c.status for c in children})
    if final is TaskStatus.failed:
        mark_features_failed(session, parent.feature_ids or [])
    if parent.parent_id:
        settle_parent(session, parent.parent_id)
    return final
