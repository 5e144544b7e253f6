"""The monitor tick: settle interrupted landings, time out stuck tasks, recover lost work, reap orphan sandboxes,
record a metric snapshot of every active run (and prune old ones)."""

from __future__ import annotations

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.locks import try_held_lock, try_xact_lock
from agentswarm.db.models import Run, RunStatus
from agentswarm.db.session import session_scope
from agentswarm.git.hub import repair_hooks
from agentswarm.git.refs import delete_branch, gc_auto
from agentswarm.git.repo import GitError
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.logs import bound
from agentswarm.merge.records import landed_branches, settle_landings
from agentswarm.monitor.recovery import reap_orphans, recover_stuck, resend_lost
from agentswarm.monitor.snapshots import prune_snapshots, record_snapshot


def monitor_tick(settings: Settings | None = None) -> dict:
    """One sweep; a second monitor running at the same time does nothing."""
    settings = settings or get_settings()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        landings = settle_landings_now(settings)
        with session_scope() as db:
            if not try_xact_lock(db, "monitor"):
                return {"skipped": "another monitor holds the lock"}
            runs = db.scalars(select(Run).where(Run.status == RunStatus.active)).all()
            recovered = recover_stuck(db, settings)
            resent = resend_lost(db, client, held_for_s=settings.stale_heartbeat_s)
            reaped = reap_orphans(db, settings, [r.id for r in runs])
            hooks = _guard_hub(db, settings, runs[0].id if runs else None)
            for run in runs:
                with bound(run_id=run.id):
                    dispatch_pending(db, run.id)
                    record_snapshot(db, client, run)
            pruned = prune_snapshots(db, settings.snapshot_retention_hours, settings.snapshot_max_rows)
        _gc_hub(settings)
        return {"recovered": recovered, "resent": resent, "reaped": reaped, "hooks_removed": hooks,
                "landings": landings, "snapshots_pruned": pruned}
    finally:
        client.close()


def settle_landings_now(settings: Settings) -> dict[str, list[str]]:
    """Landings a dead merge stage left half done (after a restart of it or of Postgres), settled from git.

    Only while no merge is running (the merge lock, not waited for): a merge in flight settles them itself.
    """
    hub = str(settings.hub_path.resolve())
    with try_held_lock("merge") as free:
        if not free:
            return {}
        with session_scope() as db:
            settled = settle_landings(db, hub)
            gone = landed_branches(db, settled["merged"]) if settings.merge_delete_branch else []
        for branch, head in gone:  # recorded merged (committed above): the branch may go now
            delete_branch(hub, branch, expected_sha=head)
        return settled


def _guard_hub(db: Session, settings: Settings, run_id: str | None) -> list[str]:
    """Hooks planted in the local hub run for every agent's push: remove them, restore pre-receive, tell a person."""
    hub = settings.hub_path.resolve()
    if settings.git_repo_url or not (hub / "HEAD").exists():
        return []  # a remote hub is protected by its host; the local mirror receives no pushes
    try:
        removed = repair_hooks(hub)
    except (GitError, OSError) as exc:
        record_event(db, "hub.needs_person", f"could not check the hub's hooks: {exc}"[:500], run_id=run_id)
        return []
    if removed:
        record_event(db, "hub.hooks_removed", f"removed {', '.join(removed)} from the hub"[:500], run_id=run_id,
                     removed=removed)
    return removed


def _gc_hub(settings: Settings) -> None:
    """Plumbing never triggers git's automatic housekeeping; loose objects would pile up in the hub."""
    hub = settings.hub_path.resolve()
    if (hub / "HEAD").exists():
        try:
            gc_auto(hub, timeout_s=600)
        except GitError:
            pass  # housekeeping only: the next tick tries again
