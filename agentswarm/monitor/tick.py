"""The monitor tick: time out stuck tasks, recover lost work, reap orphan sandboxes, record metrics."""

from __future__ import annotations

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.locks import try_xact_lock
from agentswarm.db.models import Run, RunStatus
from agentswarm.db.session import session_scope
from agentswarm.git.refs import gc_auto
from agentswarm.git.repo import GitError
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.monitor.recovery import reap_orphans, recover_stuck, resend_lost
from agentswarm.ops.status import run_summary
from agentswarm.queue.broker import queue_lengths


def snapshot(db: Session, client: redis.Redis, run: Run) -> dict:
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
            runs = db.scalars(select(Run).where(Run.status == RunStatus.active)).all()
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
    hub = settings.hub_path.resolve()
    if (hub / "HEAD").exists():
        try:
            gc_auto(hub, timeout_s=600)
        except GitError:
            pass  # housekeeping only: the next tick tries again
