"""Undo the landing that broke main: a revert commit, handed to the merge queue as a task of its own.

Main is never rewritten. The revert undoes the culprit's whole landing (every commit it put on
main, found from its merge record) in one commit built on the current main without a work tree
(`git.landing.revert_onto`). It becomes a `revert` task, born complete with that commit as its
recorded head, and the merge queue, main's only writer, lands it like any branch, gate included.
Its landing reopens the culprit (`lifecycle.reverts`). A revert that conflicts now, or that the
queue cannot land, is not retried: the reconciler falls back to fix tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import HandoffRecord, MergeAttempt, MergeStatus, Task, TaskKind, TaskStatus
from agentswarm.db.text import stored_text
from agentswarm.git import refs
from agentswarm.git.landing import Landing, changed_between, landed_range, revert_onto
from agentswarm.git.repo import open_repo
from agentswarm.queue.send import merge_after_commit

REVERT_PRIORITY = 1
TRAILER = "Reverted-Task"


@dataclass
class Culprit:
    """The task whose landing holds the first bad commit, and that landing."""

    task: Task
    landing: MergeAttempt


def culprit_of(db: Session, sha: str) -> Culprit | None:
    """The task whose landing put `sha` on main (its status says whether it was reverted since); None if none did."""
    landing = db.scalars(select(MergeAttempt).where(
        MergeAttempt.status.in_((MergeStatus.merged, MergeStatus.reverted)),
        MergeAttempt.commits_landed.contains([sha])).order_by(MergeAttempt.id.desc()).limit(1)).first()
    if landing is None:
        return None
    task = db.get(Task, landing.task_id)
    return Culprit(task, landing) if task is not None else None


def open_revert(db: Session, task_id: str) -> Task | None:
    """A revert of this task that is still on its way to main (complete, not yet landed)."""
    landed = select(MergeAttempt.task_id).where(MergeAttempt.status == MergeStatus.merged)
    return db.scalars(select(Task).where(Task.kind == TaskKind.revert, Task.origin_id == task_id,
                                         Task.status == TaskStatus.complete, Task.id.not_in(landed))).first()


def make_revert(db: Session, settings: Settings, culprit: Culprit, main: str, *, culprit_sha: str,
                feedback: dict[str, Any], check_id: int | None, why: str, marks: list[str] | None = None) -> Task | str:
    """The revert task for the culprit's landing, sent to the merge queue on commit; or why there is none."""
    hub = str(settings.hub_path.resolve())
    task = culprit.task
    if task.kind is TaskKind.revert:
        return "the first bad commit is itself a revert"
    span = landed_range(hub, list(culprit.landing.commits_landed))
    if span is None:
        return f"the landing of {task.branch} is not a stretch of main's history"
    base, last = span
    message = (f"Revert \"{(task.title or task.id)[:120]}\" ({task.branch})\n\n"
               f"Main went red in the reconciler's checks ({why}); its first bad commit {culprit_sha[:12]} "
               f"came with this landing.\nThis reverts {base[:12]}..{last[:12]}.\n\n{TRAILER}: {task.id}")
    out = revert_onto(hub, main, base, last, stored_text(message, None, settings))
    if out.status is not Landing.MERGED or out.tip is None:
        return out.error or f"nothing of {task.branch} is left on main to revert"
    revert = Task(run_id=task.run_id, kind=TaskKind.revert, status=TaskStatus.complete, origin_id=task.id,
                  title=stored_text(f"Revert: {task.title or task.id}", 200, settings),
                  description=stored_text(message, None, settings), scope=list(task.scope), priority=REVERT_PRIORITY,
                  branch="pending", base_sha=main, attempts=1, max_attempts=1, finished_at=datetime.now(UTC),
                  context={"gate": feedback, "revert": {"culprit_sha": culprit_sha, "base": base, "last": last,
                                                        "check_id": check_id, "why": why,
                                                        "marks": list(marks or [])[:50]}})
    db.add(revert)
    db.flush()
    revert.branch = f"swarm/{revert.id}"
    refs.update_ref_cas(open_repo(hub), refs.branch_ref(revert.branch), out.tip, None)
    db.add(HandoffRecord(task_id=revert.id, attempt=1, status=TaskStatus.complete, commits=[out.tip],
                         head_sha=out.tip, files_changed=changed_between(hub, main, out.tip),
                         summary=f"revert of {task.branch} ({base[:12]}..{last[:12]})"))
    record_event(db, "reconcile.revert", f"{task.branch} broke main ({why}): revert {revert.branch} sent to the "
                 "merge queue", run_id=task.run_id, task_id=revert.id, origin=task.id, culprit_sha=culprit_sha)
    merge_after_commit(db, revert.id)
    return revert
