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
from agentswarm.git.repo import GitError
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.lifecycle.features import set_feature_status
from agentswarm.lifecycle.reverts import reopen_reverted
from agentswarm.merge.conflicts import conflict_task_for
from agentswarm.queue.plan_requests import request_plan_after_commit

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
    """A task landed: its features are done (once its siblings landed too); a landed revert reopens its culprit.

    Main moved, so the planner is asked for a pass once the landing commits.
    """
    request_plan_after_commit(db)
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
        elif settings.conflict_policy is ConflictPolicy.resolve:
            give_back(db, task, result, settings)
        else:
            record_event(db, "merge.needs_person", f"policy is skip: {task.branch} left unmerged",
                         run_id=task.run_id, task_id=task.id)
    else:
        record_event(db, "merge.failed", stored_text(result.error or "", 500, settings), run_id=task.run_id,
                     task_id=task.id)
    return attempt


def give_back(db: Session, task: Task, result: MergeResult, settings: Settings) -> None:
    """A branch still conflicts after MAX_CONFLICT_TASKS resolutions: it fails, and its features go back to
    the planner, which plans them afresh from the current main (counted as one failed attempt of each feature,
    so a feature that keeps conflicting fails for good after MAX_ATTEMPTS and blocks what waits on it).

    Conflicts that outlast their resolutions come from other branches landing the same files meanwhile; leaving
    the branch complete and unmerged would hold its features in progress for the rest of the run.
    """
    files = ", ".join(result.conflict_files)
    error = (f"still conflicts with main in {files} after {settings.max_conflict_tasks} conflict-resolution "
             f"task(s); its features go back to the planner")
    if transition(db, task.id, TaskStatus.complete, TaskStatus.failed, error=stored_text(error, 2000, settings)):
        set_feature_status(db, task.feature_ids or [], FeatureStatus.failed)
        request_plan_after_commit(db)
        record_event(db, "merge.gave_up", stored_text(f"{task.branch}: {error}", 500, settings),
                     run_id=task.run_id, task_id=task.id, origin=task.origin_id, files=result.conflict_files)


class MissingHead(SwarmError):
    """A complete task with no recorded head commit: nothing the queue may land."""


def recorded_head(db: Session, task: Task) -> str | None:
    """The head commit the task's latest complete handoff recorded (measured from git by the runner)."""
    return db.scalar(select(HandoffRecord.head_sha).where(
        HandoffRecord.task_id == task.id, HandoffRecord.status == TaskStatus.complete,
        HandoffRecord.head_sha.is_not(None)).order_by(HandoffRecord.attempt.desc(), HandoffRecord.id.desc()).limit(1))


# -- crash-consistent landing ----------------------------------------------------------------------
#
# A landing is written down before main moves and finished after: (1) a `landing` row, committed, names the sha
# main is about to move to; (2) the compare-and-swap; (3) the row becomes `merged` (features done, events) in one
# commit; (4) only then is the branch deleted. A crash anywhere leaves a state `settle_landings` reads back from
# git: a `landing` row whose sha main holds landed (recorded merged now, once); one whose sha main does not hold
# never moved main (abandoned; the task is landed again). It runs under the merge lock: at the start of every
# merge, and from the monitor after a restart.


def record_intent(db: Session, task: Task, *, strategy: str, main_before: str, main_after: str, head: str | None,
                  landed: list[str], batch_id: str | None = None, position: int | None = None,
                  tree: str | None = None) -> MergeAttempt:
    """Add the `landing` row of a task about to land (the caller commits it before main moves)."""
    row = MergeAttempt(task_id=task.id, branch=task.branch, strategy=strategy, status=MergeStatus.landing,
                       main_before=main_before, main_after=main_after, commits_landed=list(landed), head_sha=head,
                       batch_id=batch_id, position=position, tree_sha=tree, started_at=datetime.now(UTC))
    db.add(row)
    db.flush()
    return row


def finish_landing(db: Session, row: MergeAttempt, task: Task, *, recovered: bool = False,
                   **data: object) -> None:
    """A landing row whose sha main now holds becomes `merged`: the task's features done, the event, once."""
    row.status, row.finished_at = MergeStatus.merged, datetime.now(UTC)
    if row.started_at is not None:
        row.duration_ms = (row.finished_at - row.started_at).total_seconds() * 1000
    mark_done(db, task)
    record_event(db, "merge.merged", f"{task.branch} -> main {(row.main_after or '')[:10]}"
                 + (" (recorded after a crash)" if recovered else ""), run_id=task.run_id, task_id=task.id,
                 commits=len(row.commits_landed or []), batch_id=row.batch_id, recovered=recovered, **data)


def settle_landings(db: Session, hub: str, task_ids: list[str] | None = None) -> dict[str, list[str]]:
    """Resolve `landing` rows left by a merge stage that died: merged if main holds their sha, else abandoned.

    Call it holding the merge lock (no landing of this process is in flight). Returns the task ids settled each way
    (the branches of the ones recorded merged are the caller's to delete, after its commit: `landed_branches`).
    """
    q = select(MergeAttempt).where(MergeAttempt.status == MergeStatus.landing).order_by(MergeAttempt.id)
    if task_ids is not None:
        q = q.where(MergeAttempt.task_id.in_(task_ids))
    rows = list(db.scalars(q))
    out: dict[str, list[str]] = {"merged": [], "abandoned": []}
    if not rows:
        return out
    main = refs.rev_parse(hub, "refs/heads/main")
    for row in rows:
        task = db.get(Task, row.task_id)
        on_main = bool(main and row.main_after and _reachable(hub, row.main_after, main))
        twin = db.scalar(select(MergeAttempt.id).where(MergeAttempt.task_id == row.task_id,
                                                       MergeAttempt.status == MergeStatus.merged).limit(1))
        if on_main and task is not None and twin is None:
            finish_landing(db, row, task, recovered=True)
            out["merged"].append(row.task_id)
            continue
        row.status, row.finished_at = MergeStatus.abandoned, datetime.now(UTC)
        row.error = ("already recorded merged" if on_main else
                     f"main never moved to {(row.main_after or '?')[:12]}: the merge stage stopped before its "
                     "compare-and-swap; the branch is landed again")
        out["abandoned"].append(row.task_id)
        if task is not None and not on_main:
            record_event(db, "merge.interrupted", row.error, run_id=task.run_id, task_id=task.id)
    return out


def landed_branches(db: Session, task_ids: list[str]) -> list[tuple[str, str]]:
    """(branch, head) of these tasks' landings: what may be deleted once their records are committed."""
    if not task_ids:
        return []
    rows = db.execute(select(MergeAttempt.branch, MergeAttempt.head_sha).where(
        MergeAttempt.task_id.in_(task_ids), MergeAttempt.status == MergeStatus.merged,
        MergeAttempt.head_sha.is_not(None))).all()
    return [(b, h) for b, h in rows if h]


def _reachable(hub: str, sha: str, main: str) -> bool:
    try:
        return refs.is_ancestor(hub, sha, main)
    except GitError:  # an unknown commit (never written, or collected): main cannot hold it
        return False
