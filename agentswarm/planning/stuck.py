"""A run with nothing runnable left: it waits RUN_STUCK_GRACE_S for a person, then stops with the reason.

Stuck means: some feature is not done, yet no task of the run is open (pending, assigned,
running, or a parent waiting for children), no complete task still has to land (no settled
merge record, not given up by the monitor), no feature is ready for the planner, and the
reconciler has nothing left to say about main (it saw the current main green, or it cannot
check it). A main that is unchecked or red is the reconciler's to act on: never stuck, whatever
else. A paused run is a person's already and is never called stuck. A run with no features at
all is not stuck either (manual tasks may still be added to it).

The first tick that finds a run stuck records `run.stuck` (a person is needed: the message says
what is blocked by what and how to unblock it) and keeps {since, reason} in run.config["stuck"];
once the grace has passed the run ends `stopped` with that reason. Work that becomes runnable
again (a person retried a task, added one for a feature) clears the mark with `run.unstuck`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import FeatureStatus, MergeAttempt, Run, RunStatus, Task, TaskStatus
from agentswarm.db.states import MERGE_SETTLED
from agentswarm.lifecycle.runs import end_run, main_verdict, open_task_count
from agentswarm.planning.blocked import Blocking, listed
from agentswarm.planning.state import Board
from agentswarm.queue.names import RECONCILE_TICK
from agentswarm.queue.send import tick_after_commit


def landing_pending(session: Session, run_id: str) -> int:
    """Complete tasks of the run whose branch has yet to land (or to become a conflict task)."""
    parents = select(Task.parent_id).where(Task.parent_id.is_not(None), Task.run_id == run_id)
    settled = select(MergeAttempt.task_id).where(MergeAttempt.status.in_(MERGE_SETTLED))
    contexts = session.scalars(select(Task.context).where(
        Task.run_id == run_id, Task.status == TaskStatus.complete, Task.id.not_in(settled), Task.id.not_in(parents)))
    return sum(1 for c in contexts if not (c or {}).get("merge_given_up"))


def _explain(board: Board, blocking: Blocking) -> str:
    parts = []
    for root in sorted(blocking.roots, key=lambda fid: (board.features[fid].priority, fid)):
        blocks = blocking.blocked_by(root)
        parts.append(f"{root} {blocking.roots[root]}" + (f" (it blocks {listed(blocks)})" if blocks else ""))
    explained = set(blocking.roots) | set(blocking.blocked)
    other = [f for f in sorted(board.features) if f not in explained and board.features[f].status != FeatureStatus.done]
    for fid in other[:5]:
        parts.append(board.why_not(fid) or f"feature {fid} is not done")
    if len(other) > 5:
        parts.append(f"+{len(other) - 5} more features not done")
    return "nothing runnable: " + "; ".join(parts)


def stuck_reason(session: Session, run: Run, settings: Settings, board: Board, blocking: Blocking) -> str | None:
    """Why the run can make no more progress without a person, or None while something may still move."""
    if not any(f.status != FeatureStatus.done for f in board.features.values()):
        return None
    if board.ready() or open_task_count(session, run.id) or landing_pending(session, run.id):
        return None
    waiting, _ = main_verdict(session, settings)
    if waiting:  # the reconciler's turn: its check, revert or fix tasks may yet make work
        tick_after_commit(session, RECONCILE_TICK, expires_s=settings.plan_interval_s)
        return None
    return _explain(board, blocking)


def settle_stuck(session: Session, run: Run, settings: Settings, board: Board, blocking: Blocking,
                 now: datetime | None = None) -> str | None:
    """Mark, keep or clear the run's stuck mark, and stop the run once its grace has passed; the reason, or None."""
    now = now or datetime.now(UTC)
    reason = None if run.paused_at is not None else stuck_reason(session, run, settings, board, blocking)
    mark = (run.config or {}).get("stuck")
    if reason is None:
        if mark:
            run.config = {k: v for k, v in (run.config or {}).items() if k != "stuck"}
            record_event(session, "run.unstuck", "work is runnable again", run_id=run.id)
        return None
    grace = timedelta(seconds=settings.run_stuck_grace_s)
    if not mark:
        mark = {"since": now.isoformat(), "reason": reason}
        until = "now" if not grace else f"at {(now + grace).isoformat(timespec='seconds')}"
        record_event(session, "run.stuck", f"{reason}. The run stops {until} unless a person acts "
                     "(`agentswarm retry <task>`, `agentswarm add-task --feature <id>`)", run_id=run.id,
                     grace_s=settings.run_stuck_grace_s)
    run.config = {**(run.config or {}), "stuck": {**mark, "reason": reason}}
    if now - datetime.fromisoformat(mark["since"]) >= grace:
        end_run(session, run.id, RunStatus.stopped, reason)
    return reason
