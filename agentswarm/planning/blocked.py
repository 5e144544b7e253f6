"""Features blocked behind one that failed for good, kept in the features table from the board.

What "failed for good" means is the board's (agentswarm/planning/state.py): the run's planner will
not try the feature again. That feature is `failed` with the reason in `status_reason`; every
feature depending on it, directly or through others, is `blocked`, naming it in `blocked_by` (the
first, when several) and the chain in `status_reason`. Each newly failed feature is a
`feature.needs_person` event naming what it blocks; newly blocked ones a `feature.blocked` event.

Derived state, recomputed from the board on every plan tick (and at once when a person retries a
task): a feature whose cause is gone (its task retried, a task added for it, a new run) is pending
again, with a `feature.unblocked` event. Idempotent: a second refresh changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from agentswarm.db.events import record_event
from agentswarm.lifecycle.features import block_feature, clear_blocked, note_failed_for_good
from agentswarm.planning.state import Board, load_board

LISTED = 10  # feature ids named in one message before "+N more"


@dataclass
class Blocking:
    """What one refresh found and changed."""

    roots: dict[str, str] = field(default_factory=dict)  # failed for good: {feature: why}
    blocked: dict[str, list[str]] = field(default_factory=dict)  # {feature: the roots it waits on}
    newly_failed: list[str] = field(default_factory=list)
    newly_blocked: list[str] = field(default_factory=list)
    unblocked: list[str] = field(default_factory=list)

    def blocked_by(self, root: str) -> list[str]:
        """The features waiting on `root`."""
        return [fid for fid, roots in self.blocked.items() if root in roots]


def listed(ids: list[str], n: int = LISTED) -> str:
    """"a, b, c" or "a, b, c +4 more"."""
    return ", ".join(ids[:n]) + (f" +{len(ids) - n} more" if len(ids) > n else "")


def failure_reason(board: Board, feature_id: str) -> str:
    """Why the planner gave a feature up in this run."""
    n = board.failures_by_feature.get(feature_id, 0)
    reason = f"failed for good: {n} task{'s' if n != 1 else ''} ended without landing"
    last = board.last_failure.get(feature_id)
    if last is not None:
        reason += f"; the last, {last.task_id}, {last.status}" + (f": {last.error[:200]}" if last.error else "")
    return reason


def _blocked_reason(board: Board, feature_id: str, roots: list[str], blocked: dict[str, list[str]]) -> str:
    deps = board.features[feature_id].dependencies or []
    via = [d for d in deps if d in blocked or d in roots]
    if sorted(via) == roots:
        return f"waits for {listed(roots)}, which failed for good"
    return f"waits for {listed(via)}, blocked because {listed(roots)} failed for good"


def refresh_blocked(session: Session, run_id: str, board: Board) -> Blocking:
    """Bring the features' failed-for-good and blocked marks in line with `board`; events for what changed."""
    out = Blocking(blocked=board.blocked())
    for fid in board.features:
        if board.failed_for_good(fid):
            out.roots[fid] = failure_reason(board, fid)
            if note_failed_for_good(session, fid, out.roots[fid]):
                out.newly_failed.append(fid)
    for fid, roots in out.blocked.items():
        if block_feature(session, fid, roots[0], _blocked_reason(board, fid, roots, out.blocked)):
            out.newly_blocked.append(fid)
    out.unblocked = clear_blocked(session, out.blocked, out.roots)
    for fid in out.newly_failed:
        blocks = out.blocked_by(fid)
        task = board.last_failure.get(fid)
        hint = f"; `agentswarm retry {task.task_id}` tries it again" if task else ""
        record_event(session, "feature.needs_person",
                     f"{fid} {out.roots[fid]}" + (f"; it blocks {listed(blocks)}" if blocks else "") + hint,
                     run_id=run_id, task_id=task.task_id if task else None, feature=fid, blocks=blocks)
    for root in sorted({r for fid in out.newly_blocked for r in out.blocked[fid]}):
        newly = [fid for fid in out.newly_blocked if root in out.blocked[fid]]
        record_event(session, "feature.blocked", f"{listed(newly)} blocked: waiting on {root}, which failed for good",
                     run_id=run_id, feature=root, blocked=newly)
    if out.unblocked:
        record_event(session, "feature.unblocked", f"{listed(out.unblocked)} no longer wait on a failed feature",
                     run_id=run_id, features=out.unblocked)
    return out


def refresh_run(session: Session, run_id: str, max_attempts: int) -> Blocking:
    """refresh_blocked on a freshly read board (after a person's retry or added task)."""
    return refresh_blocked(session, run_id, load_board(session, run_id, max_attempts))
