"""Recovering lost work from what Postgres says: stuck tasks, lost messages, orphan sandboxes.

Recovery comes from Postgres, not from Redis: a worker killed with SIGKILL leaves its
message unacknowledged for hours (the visibility timeout), and a restarted Redis keeps
nothing. Whatever Postgres says is pending but Redis does not hold is sent again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import FeatureStatus, MergeAttempt, Task, TaskStatus
from agentswarm.db.states import IN_FLIGHT, MAX_MERGE_FAILURES, MERGE_SETTLED, merges_given_up, transition
from agentswarm.lifecycle.features import set_feature_status
from agentswarm.queue.broker import queued_task_ids
from agentswarm.queue.names import MERGE_BRANCH, RUN_TASK
from agentswarm.queue.send import merge_after_commit, run_task_after_commit
from agentswarm.sandbox.factory import backend_for

log = logging.getLogger(__name__)
SEND_GRACE_S = 30  # a message is published just after commit: give it time to appear
ORPHAN_GRACE_S = 60


def _now() -> datetime:
    return datetime.now(UTC)


def _is_parent(db: Session, task_id: str) -> bool:
    return db.execute(select(func.count()).where(Task.parent_id == task_id)).scalar_one() > 0


def recover_stuck(db: Session, settings: Settings) -> list[str]:
    """Tasks whose worker died (stale heartbeat) or overran their deadline go back to pending."""
    now = _now()
    stale = now - timedelta(seconds=settings.stale_heartbeat_s)
    overdue = now - timedelta(seconds=settings.worker_timeout + 2 * settings.stale_heartbeat_s)
    rows = db.scalars(select(Task).where(
        Task.status.in_(IN_FLIGHT),
        (Task.heartbeat_at < stale) | (Task.heartbeat_at.is_(None)) | (Task.started_at < overdue),
    )).all()
    moved = []
    for task in rows:
        if _is_parent(db, task.id):
            continue  # a decomposed parent waits for its children, with no heartbeat of its own
        reason = "deadline passed" if task.started_at and task.started_at < overdue else "worker lost"
        if task.sandbox_id:
            _terminate(settings, task.sandbox_id)
        if task.attempts < task.max_attempts:
            ok = transition(db, task.id, task.status, TaskStatus.pending, enqueued_at=None, error=reason,
                            started_at=None)
            kind = "task.recovered"
        else:
            src = task.status
            ok = transition(db, task.id, src, TaskStatus.failed, error=f"{reason}; attempts exhausted")
            kind = "task.failed"
        if ok:
            record_event(db, kind, reason, run_id=task.run_id, task_id=task.id, attempt=task.attempts)
            moved.append(task.id)
    return moved


def _terminate(settings: Settings, sandbox_id: str) -> None:
    try:
        backend_for(settings).terminate(sandbox_id)
    except Exception:
        log.warning("could not terminate sandbox %s", sandbox_id, exc_info=True)


def resend_lost(db: Session, client: redis.Redis, held_for_s: float | None = None) -> dict[str, list[str]]:
    """Re-publish run_task/merge_branch for tasks Postgres says were sent but Redis does not hold.

    `held_for_s`: a message a worker took longer ago than that (and never acknowledged: the worker died, or its
    task is still running) is not counted as held; see `queue.broker.queued_task_ids`.
    """
    cutoff = _now() - timedelta(seconds=SEND_GRACE_S)
    queued = queued_task_ids(client, "work", RUN_TASK, held_for_s)
    lost_work = db.execute(select(Task.id, Task.priority).where(
        Task.status == TaskStatus.pending, Task.enqueued_at.is_not(None), Task.enqueued_at < cutoff,
    )).all()
    work = []
    for tid, prio in lost_work:
        if tid not in queued:
            db.execute(update(Task).where(Task.id == tid).values(enqueued_at=_now()))
            run_task_after_commit(db, tid, prio)
            work.append(tid)
    merging = queued_task_ids(client, "merge", MERGE_BRANCH, held_for_s)
    settled = select(MergeAttempt.task_id).where(MergeAttempt.status.in_(MERGE_SETTLED))
    given_up = set(db.scalars(merges_given_up()))
    unmerged = db.scalars(select(Task).where(
        Task.status == TaskStatus.complete, Task.finished_at < cutoff, Task.id.not_in(settled),
    )).all()
    merges = []
    for task in unmerged:
        if task.id in merging or _is_parent(db, task.id):
            continue
        if task.id in given_up:
            if not task.context.get("merge_given_up"):
                task.context = {**task.context, "merge_given_up": True}
                set_feature_status(db, task.feature_ids, FeatureStatus.failed)
                record_event(db, "merge.needs_person", f"merge failed {MAX_MERGE_FAILURES} times",
                             run_id=task.run_id, task_id=task.id)
            continue
        merge_after_commit(db, task.id)
        merges.append(task.id)
    for tid in work + merges:
        record_event(db, "message.resent", "lost from the broker", task_id=tid)
    return {"work": work, "merge": merges}


def reap_orphans(db: Session, settings: Settings, run_ids: list[str]) -> list[str]:
    """Terminate sandboxes that no running task owns."""
    backend = backend_for(settings)
    owned = set(db.scalars(select(Task.sandbox_id).where(
        Task.status.in_(IN_FLIGHT), Task.sandbox_id.is_not(None),
    )).all())
    cutoff = _now() - timedelta(seconds=ORPHAN_GRACE_S)
    reaped = []
    for run_id in run_ids:
        for info in backend.list(run_id):
            young = info.created_at is not None and info.created_at.replace(tzinfo=info.created_at.tzinfo or UTC) > cutoff
            if info.id in owned or young:
                continue
            _terminate(settings, info.id)
            record_event(db, "sandbox.reaped", info.id, run_id=run_id, task_id=info.task_id)
            reaped.append(info.id)
    return reaped
