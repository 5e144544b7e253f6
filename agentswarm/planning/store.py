"""Turning validated drafts into task rows, and recording why proposals were dropped."""

from __future__ import annotations

from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import Task, TaskKind, TaskStatus
from agentswarm.db.text import clean_data, stored_text
from agentswarm.planning.parsing import Rejection, TaskDraft

EVENTS_PER_REPLY = 20


def store_task(session: Session, draft: TaskDraft, *, run_id: str, base_sha: str | None, settings: Settings,
               parent: Task | None = None, context: dict | None = None) -> Task:
    """Insert one pending task (branch `swarm/<id>`); the caller dispatches after.

    The model wrote the draft: its texts are scrubbed of secrets and cleaned of NUL/surrogates first.
    """
    task = Task(
        run_id=run_id, parent_id=parent.id if parent else None, kind=TaskKind(draft.kind), status=TaskStatus.pending,
        title=stored_text(draft.title or "", None, settings),
        description=stored_text(draft.description or "", None, settings),
        scope=clean_data(draft.scope), acceptance=[stored_text(a, None, settings) for a in draft.acceptance],
        priority=draft.priority, feature_ids=clean_data(draft.feature_ids), depth=parent.depth + 1 if parent else 0,
        branch="pending", base_sha=base_sha, max_attempts=settings.max_attempts, context=clean_data(context or {}),
    )
    session.add(task)
    session.flush()
    task.branch = f"swarm/{task.id}"
    session.flush()
    return task


def record_rejections(session: Session, rejections: list[Rejection], *, source: str, run_id: str,
                      task_id: str | None = None) -> None:
    """One event per dropped proposal (capped), and one summing up the rest."""
    for r in rejections[:EVENTS_PER_REPLY]:
        record_event(session, f"{source}.rejected", r.reason, run_id=run_id, task_id=task_id,
                     index=r.index, proposal=r.excerpt)
    rest = rejections[EVENTS_PER_REPLY:]
    if rest:
        reasons: dict[str, int] = {}
        for r in rest:
            key = r.reason if r.reason.startswith("over the limit") else r.reason.split(":")[0][:80]
            reasons[key] = reasons.get(key, 0) + 1
        record_event(session, f"{source}.rejected", f"{len(rest)} more proposals dropped", run_id=run_id,
                     task_id=task_id, reasons=reasons)
