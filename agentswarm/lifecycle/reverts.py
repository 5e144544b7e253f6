"""A revert landed: the task whose landing it undid goes back to its author, with what broke main.

The reconciler makes a revert task (kind `revert`, born complete, its head the revert commit) and
the merge queue lands it like any branch. Only once it is on main is the culprit reopened: its
merge record becomes `reverted` (so its next attempt may land), its features are in progress
again, and it is sent back as a new attempt with the reconciler's output in `context["gate"]`,
exactly like a branch the gate blamed. A new check of main is asked for at once.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from agentswarm.db.events import record_event
from agentswarm.db.models import MergeAttempt, MergeStatus, Task, TaskKind, TaskStatus
from agentswarm.lifecycle.features import reopen_features
from agentswarm.lifecycle.feedback import send_back
from agentswarm.queue.names import RECONCILE_TICK
from agentswarm.queue.send import tick_after_commit


def reopen_reverted(db: Session, revert: Task) -> str:
    """The revert `revert` landed: reopen the task it reverted. Returns what became of it ("" if nothing)."""
    if revert.kind is not TaskKind.revert or not revert.origin_id:
        return ""
    culprit = db.get(Task, revert.origin_id)
    tick_after_commit(db, RECONCILE_TICK)  # main changed because it was red: check it again now
    if culprit is None:
        return ""
    db.execute(update(MergeAttempt).where(MergeAttempt.task_id == culprit.id,
                                          MergeAttempt.status == MergeStatus.merged)
               .values(status=MergeStatus.reverted).execution_options(synchronize_session=False))
    reopen_features(db, culprit.feature_ids)
    info = (revert.context or {}).get("revert") or {}
    record_event(db, "reconcile.reverted", f"{culprit.branch}: reverted off main ({revert.branch} landed)",
                 run_id=culprit.run_id, task_id=culprit.id, revert_task_id=revert.id,
                 culprit_sha=info.get("culprit_sha"), check_id=info.get("check_id"))
    feedback = (revert.context or {}).get("gate") or {"source": "reconciler", "output": ""}
    return send_back(db, culprit, TaskStatus.complete, feedback,
                     f"reverted off main: it broke the reconciler's checks ({info.get('why', 'main went red')})")
