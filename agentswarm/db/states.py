"""The legal task transitions, applied as conditional UPDATEs so two workers never both win."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Select, func, select, update
from sqlalchemy.orm import Session

from agentswarm.db.models import MergeAttempt, MergeStatus, Task, TaskStatus
from agentswarm.db.text import stored_text
from agentswarm.errors import IllegalTransition

S = TaskStatus
FREE_TEXT = ("summary", "error", "title", "description")  # model- or person-supplied: scrubbed and cleaned

TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.pending: frozenset({S.assigned, S.cancelled}),
    S.assigned: frozenset({S.running, S.pending, S.failed, S.cancelled}),
    S.running: frozenset({S.complete, S.failed, S.blocked, S.cancelled, S.pending}),
    S.failed: frozenset({S.pending}),
    S.blocked: frozenset({S.pending, S.cancelled}),
    S.complete: frozenset({S.pending, S.blocked, S.failed}),
    S.cancelled: frozenset(),
}
# running -> pending and assigned -> pending are the monitor's recovery of lost work.
# complete -> pending (or blocked, out of attempts) is the gate sending a branch that broke the build
# back to its author: complete means "the agent finished", landing is the merge record's to say.
# complete -> failed is a branch that can never land: a revert that conflicts, or a conflict past the cap.

TERMINAL = frozenset({S.complete, S.failed, S.blocked, S.cancelled})
IN_FLIGHT = frozenset({S.assigned, S.running})  # a worker holds the task
OPEN = frozenset({S.pending}) | IN_FLIGHT  # not ended yet
ENDED_BADLY = frozenset({S.failed, S.blocked, S.cancelled})  # ended without landing anything
# A merge record that ends a task's merging: it landed, or it became a conflict task.
MERGE_SETTLED = frozenset({MergeStatus.merged, MergeStatus.conflict})
MAX_MERGE_FAILURES = 3  # failed merge records after which a complete task waits for a person


def merges_given_up() -> Select:
    """Ids of tasks whose merge failed MAX_MERGE_FAILURES times: the monitor sends them no more, and no batch
    takes them in (a merge message sent for one by hand is still tried)."""
    return (select(MergeAttempt.task_id).where(MergeAttempt.status == MergeStatus.failed)
            .group_by(MergeAttempt.task_id).having(func.count() >= MAX_MERGE_FAILURES))


def check_transition(src: TaskStatus | str, dst: TaskStatus | str) -> None:
    """Raise IllegalTransition unless src -> dst is allowed."""
    src, dst = TaskStatus(src), TaskStatus(dst)
    if dst not in TRANSITIONS[src]:
        raise IllegalTransition(f"task cannot go from {src} to {dst}")


def transition(
    session: Session,
    task_id: str,
    src: TaskStatus | str | Iterable[TaskStatus | str],
    dst: TaskStatus | str,
    **values: Any,
) -> bool:
    """Move a task from `src` (one state or several) to `dst` if it is still there.

    Returns True when this caller made the change, False when the task was not in `src`
    (someone else moved it first). Illegal transitions raise before touching the row.
    """
    sources = [src] if isinstance(src, str | TaskStatus) else list(src)
    for s in sources:
        check_transition(s, dst)
    dst = TaskStatus(dst)
    for key in FREE_TEXT:
        if isinstance(values.get(key), str):
            values[key] = stored_text(values[key])
    now = datetime.now(UTC)
    values.setdefault("updated_at", now)
    if dst is S.running:
        values.setdefault("started_at", now)
        values.setdefault("heartbeat_at", now)
    if dst in TERMINAL:
        values.setdefault("finished_at", now)
    stmt = (
        update(Task)
        .where(Task.id == task_id, Task.status.in_([TaskStatus(s) for s in sources]))
        .values(status=dst, **values)
        .execution_options(synchronize_session=False)
    )
    result = cast(CursorResult, session.execute(stmt))  # an UPDATE: a CursorResult, which has rowcount
    changed = result.rowcount == 1
    if changed:
        obj = session.identity_map.get((Task, (task_id,), None))
        if obj is not None:
            session.expire(obj)
    return changed
