"""The monitor tick: time out stuck tasks, recover lost work, reap orphan sandboxes, record metrics.

Recovery comes from Postgres, not from Redis: a worker killed with SIGKILL leaves its
message unacknowledged for hours (the visibility timeout), and a restarted Redis keeps
nothing. Whatever Postgres says is pending but Redis does not hold is sent again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import func, select, update

from agentswarm.broker import queue_lengths, queued_task_ids
from agentswarm.config import Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.locks import try_xact_lock
from agentswarm.db.models import MergeAttempt, Run, RunStatus, Task, TaskStatus
from agentswarm.db.session import after_commit, session_scope
from agentswarm.db.states import transition
from agentswarm.dispatch import dispatch_pending, send_run_task
from agentswarm.feature_store import set_feature_status
from agentswarm.handoffs import send_merge
from agentswarm.status import run_summary

log = logging.getLogger(__name__)
SEND_GRACE_S = 30  # a message is published just after commit: give it time to appear
ORPHAN_GRACE_S = 60
MAX_MERGE_FAILURES = 3


def _now() -> datetime:
    return datetime.now(UTC)


def _is_parent(db, task_id: str) -> bool:
    return db.scalar(select(func.count()).where(Task.parent_id == task_id)) > 0


def recover_stuck(db, settings: Settings) -> list[str]:
    """Tasks whose worker died (stale heartbeat) or overran their deadline go back to pending."""
    now = _now()
    stale = now - timedelta(seconds=settings.stale_heartbeat_s)
    overdue = now - timedelta(seconds=settings.worker_timeout + 2 * settings.stale_heartbeat_s)
    rows = db.scalars(select(Task).where(
        Task.status.in_([TaskStatus.assigned.value, TaskStatus.running.value]),
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
            ok = transition(db, task.id, task.status, "pending", enqueued_at=None, error=reason,
                            started_at=None)
            kind = "task.recovered"
        else:
            src = task.status
            ok = transition(db, task.id, src, "failed", error=f"{reason}; attempts exhausted")
            kind = "task.failed"
        if ok:
            record_event(db, kind, reason, run_id=task.run_id, task_id=task.id, attempt=task.attempts)
            moved.append(task.id)
    return moved


def _terminate(settings: Settings, sandbox_id: str) -> None:
    from agentswarm.work import backend_for

    try:
        backend_for(settings).terminate(sandbox_id)
    except Exception:
        log.warning("could not terminate sandbox %s", sandbox_id, exc_info=True)


def resend_lost(db, client: redis.Redis) -> dict[str, list[str]]:
    """Re-publish run_task/merge_branch for tasks Postgres says were sent but Redis does not hold."""
    cutoff = _now() - timedelta(seconds=SEND_GRACE_S)
    queued = queued_task_ids(client, "work", "agentswarm.tasks.run_task")
    lost_work = db.execute(select(Task.id, Task.priority).where(
        Task.status == TaskStatus.pending.value, Task.enqueued_at.is_not(None), Task.enqueued_at < cutoff,
    )).all()
    work = []
    for tid, prio in lost_work:
        if tid not in queued:
            db.execute(update(Task).where(Task.id == tid).values(enqueued_at=_now()))
            after_commit(db, lambda tid=tid, prio=prio: send_run_task(tid, prio))
            work.append(tid)
    merging = queued_task_ids(client, "merge", "agentswarm.tasks.merge_branch")
    settled = select(MergeAttempt.task_id).where(MergeAttempt.status.in_(["merged", "conflict"]))
    failures = dict(db.execute(select(MergeAttempt.task_id, func.count()).where(
        MergeAttempt.status == "failed").group_by(MergeAttempt.task_id)).all())
    unmerged = db.scalars(select(Task).where(
        Task.status == TaskStatus.complete.value, Task.finished_at < cutoff, Task.id.not_in(settled),
    )).all()
    merges = []
    for task in unmerged:
        if task.id in merging or _is_parent(db, task.id):
            continue
        if failures.get(task.id, 0) >= MAX_MERGE_FAILURES:
            if not task.context.get("merge_given_up"):
                task.context = {**task.context, "merge_given_up": True}
                set_feature_status(db, task.feature_ids, "failed")
                record_event(db, "merge.needs_person", f"merge failed {MAX_MERGE_FAILURES} times",
                             run_id=task.run_id, task_id=task.id)
            continue
        after_commit(db, lambda tid=task.id: send_merge(tid))
        merges.append(task.id)
    for tid in work + merges:
        record_event(db, "message.resent", "lost from the broker", task_id=tid)
    return {"work": work, "merge": merges}


def reap_orphans(db, settings: Settings, run_ids: list[str]) -> list[str]:
    """Terminate sandboxes that no running task owns."""
    from agentswarm.work import backend_for

    backend = backend_for(settings)
    owned = set(db.scalars(select(Task.sandbox_id).where(
        Task.status.in_([TaskStatus.assigned.value, TaskStatus.running.value]), Task.sandbox_id.is_not(None),
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


def snapshot(db, client: redis.Redis, run: Run) -> dict:
    """Counts a person would watch: tasks by state, merges, queue depths, tokens, dollars."""
    summary = run_summary(db, run)
    return {"tasks": summary["tasks"], "merged_last_hour": summary["merged_last_hour"],
            "queues": queue_lengths(client), "tokens": summary["llm"]["prompt_tokens"]
            + summary["llm"]["completion_tokens"], "cost_usd": summary["llm"]["cost_usd"]}


def monitor_tick(settings: Settings | None = None) -> dict:
    """One sweep; a second monitor running at the same time does nothing."""
    settings = settings or get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        with session_scope() as db:
            if not try_xact_lock(db, "monitor"):
                return {"skipped": "another monitor holds the lock"}
            runs = db.scalars(select(Run).where(Run.status == RunStatus.active.value)).all()
            recovered = recover_stuck(db, settings)
            resent = resend_lost(db, client)
            reaped = reap_orphans(db, settings, [r.id for r in runs])
            for run in runs:
                dispatch_pending(db, run.id)
                record_event(db, "metrics.snapshot", "", run_id=run.id, **snapshot(db, client, run))
        _gc_hub(settings)
        return {"recovered": recovered, "resent": resent, "reaped": reaped}
    finally:
        client.close()


def _gc_hub(settings: Settings) -> None:
    """Plumbing never triggers git's automatic housekeeping; loose objects would pile up in the hub."""
    import subprocess

    hub = settings.hub_path.resolve()
    if (hub / "HEAD").exists():
        subprocess.run(["git", f"--git-dir={hub}", "gc", "--auto", "--quiet"], capture_output=True, timeout=600)
