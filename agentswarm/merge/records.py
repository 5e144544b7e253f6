"""What the merge queue writes: merge attempts, landed features, conflict tasks, and main's remote copy."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.config import ConflictPolicy, Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import (
    FeatureStatus,
    HandoffRecord,
    MergeAttempt,
    MergeStatus,
    Task,
    TaskKind,
    TaskStatus,
)
from agentswarm.db.states import transition
from agentswarm.db.text import stored_text
from agentswarm.errors import SwarmError
from agentswarm.git import refs
from agentswarm.git.landing import Landing, MergeResult
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.lifecycle.features import set_feature_status
from agentswarm.lifecycle.reverts import reopen_reverted
from agentswarm.merge.conflicts import conflict_task_for

log = logging.getLogger(__name__)
LANDED = (Landing.MERGED, Landing.ALREADY_MERGED)  # the branch is on main: the task merged
RECORDED_AS = {Landing.MERGED: MergeStatus.merged, Landing.ALREADY_MERGED: MergeStatus.merged,
               Landing.CONFLICT: MergeStatus.conflict, Landing.FAILED: MergeStatus.failed}


def remote_push_main(settings: Settings) -> None:
    """With a remote hub, publish main after it moved in the local mirror.

    Nothing is fetched first: the work of a task arrives in the mirror itself (the work stage
    imports the sandbox's bundle there, and the recorded head is what lands), and main is written
    only by this queue, so the mirror's main is never behind the remote's.
    """
    if settings.git_repo_url:
        refs.push_ref(str(settings.hub_path), "origin", "refs/heads/main")


def _siblings_unmerged(db: Session, task: Task) -> bool:
    """True while another child of the same decomposed parent has not landed yet."""
    if not task.parent_id:
        return False
    merged = select(MergeAttempt.task_id).where(MergeAttempt.status == MergeStatus.merged)
    return bool(db.scalar(select(func.count()).where(
        Task.parent_id == task.parent_id, Task.id != task.id, Task.id.not_in(merged),
        Task.status != TaskStatus.cancelled)))


def mark_done(db: Session, task: Task) -> None:
    """A task landed: its features are done (once its siblings landed too); a landed revert reopens its culprit."""
    if task.kind is TaskKind.revert:
        reopen_reverted(db, task)
    elif task.feature_ids and not _siblings_unmerged(db, task):
        set_feature_status(db, task.feature_ids, FeatureStatus.done)


def record_landing(db: Session, task: Task, strategy: str, result: MergeResult, started_at: datetime, settings: Settings) -> MergeAttempt:
    status = RECORDED_AS[result.status]
    attempt = MergeAttempt(
        task_id=task.id, branch=task.branch, strategy=strategy, status=status,
        main_before=result.main_before, main_after=result.main_after, conflict_files=result.conflict_files,
        commits_landed=result.commits_landed, error=stored_text(result.error, None, settings), started_at=started_at,
        finished_at=datetime.now(UTC), duration_ms=result.duration_ms,
    )
    db.add(attempt)
    if status is MergeStatus.merged:
        mark_done(db, task)
        record_event(db, "merge.merged", f"{task.branch} -> main {(result.main_after or '')[:10]}",
                     run_id=task.run_id, task_id=task.id, commits=len(result.commits_landed),
                     already=result.status is Landing.ALREADY_MERGED, ms=round(result.duration_ms, 1))
    elif status is MergeStatus.conflict:
        record_event(db, "merge.conflict", stored_text(", ".join(result.conflict_files), 500, settings),
                     run_id=task.run_id, task_id=task.id, files=result.conflict_files)
        if task.kind is TaskKind.revert:  # the reconciler's revert no longer applies: it falls back to fix tasks
            transition(db, task.id, TaskStatus.complete, TaskStatus.failed, error="the revert conflicts with main")
            record_event(db, "reconcile.revert_failed", f"{task.branch}: conflicts with main", run_id=task.run_id,
                         task_id=task.id, origin=task.origin_id)
            return attempt
        child = conflict_task_for(db, task, result) if settings.conflict_policy is ConflictPolicy.resolve else None
        if child is not None:
            record_event(db, "task.created", "conflict resolution", run_id=task.run_id, task_id=child.id,
                         origin=task.id)
            dispatch_pending(db, task.run_id)
        else:
            why = "conflict cap reached" if settings.conflict_policy is ConflictPolicy.resolve else "policy is skip"
            record_event(db, "merge.needs_person", f"{why}: {task.branch} left unmerged",
                         run_id=task.run_id, task_id=task.id)
    else:
        record_event(db, "merge.failed", stored_text(result.error or "", 500, settings), run_id=task.run_id,
                     task_id=task.id)
    return attempt


class MissingHead(SwarmError):
    """A complete task with no recorded head commit: nothing the queue may land."""


def recorded_head(db: Session, task: Task) -> str | None:
    """The head commit the task's latest complete handoff recorded (measured from git by the runner)."""
    return db.scalar(select(HandoffRecord.head_sha).where(
        HandoffRecord.task_id == task.id, HandoffRecord.status == TaskStatus.complete,
        HandoffRecord.head_sha.is_not(None)).order_by(HandoffRecord.attempt.desc(), HandoffRecord.id.desc()).limit(1))
