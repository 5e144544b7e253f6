"""A branch that broke the checks goes back to its author: a new attempt, most urgent, told what failed.

Used by the merge queue for a culprit its gate isolated, and by the work stage for a branch its
own presubmit still failed. No model decides who fixes a break: the author does, with the output
in its task's context (`context["gate"]`), until its attempts run out; then a person is asked.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from agentswarm.db.events import record_event
from agentswarm.db.models import Task, TaskKind, TaskStatus
from agentswarm.db.states import transition
from agentswarm.db.text import stored_data
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.lifecycle.features import set_feature_status

FEEDBACK_PRIORITY = 1
OUTPUT_CAP = 6000


def gate_feedback(source: str, output: str, *, main: str | None = None, tested_with: list[str] | None = None,
                  clashes_with: dict[str, str] | None = None, commands: list[str] | None = None) -> dict[str, Any]:
    """The `context["gate"]` a returned task carries: where it failed, the output (capped), and with what."""
    fb: dict[str, Any] = {"source": source, "output": (output or "")[-OUTPUT_CAP:]}
    if main:
        fb["main"] = main
    if tested_with:
        fb["tested_with"] = list(tested_with)
    if clashes_with:
        fb["clashes_with"] = dict(clashes_with)
    if commands:
        fb["commands"] = list(commands)
    return stored_data(fb)


def send_back(db: Session, task: Task, src: TaskStatus, feedback: dict[str, Any], reason: str,
              **values: Any) -> str:
    """Move task (in src) back to pending with the feedback, or to blocked when its attempts are used up.

    Returns "retry" or "blocked" ("" if the task was no longer in src). A revert (the reconciler's,
    with no author) is not retried: it fails, and the reconciler falls back to fix tasks.
    """
    context = {**(task.context or {}), "gate": feedback}
    if task.kind is TaskKind.revert:
        if not transition(db, task.id, src, TaskStatus.failed, error=reason[:4000], **values):
            return ""
        record_event(db, "reconcile.revert_failed", f"{task.branch}: {reason[:300]}", run_id=task.run_id,
                     task_id=task.id, origin=task.origin_id)
        return "failed"
    if task.attempts >= task.max_attempts:
        if not transition(db, task.id, src, TaskStatus.blocked, context=context, error=reason[:4000],
                          **values):
            return ""
        record_event(db, "gate.needs_person", f"{task.branch} still fails the checks after {task.attempts} "
                     f"attempt(s): {reason[:200]}", run_id=task.run_id, task_id=task.id, source=feedback["source"])
        if task.feature_ids:
            set_feature_status(db, task.feature_ids, "failed")
        dispatch_pending(db, task.run_id)
        return "blocked"
    if not transition(db, task.id, src, TaskStatus.pending, context=context, priority=FEEDBACK_PRIORITY,
                      enqueued_at=None, finished_at=None, error=reason[:4000], **values):
        return ""
    record_event(db, "task.retry", reason[:300], run_id=task.run_id, task_id=task.id, attempt=task.attempts,
                 source=feedback["source"])
    dispatch_pending(db, task.run_id)
    return "retry"
