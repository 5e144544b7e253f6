"""The merge queue: the only writer of `main`.

One merge at a time, across processes and machines: a merge runs inside a Postgres
transaction that holds an advisory lock (released at commit, or when the connection dies),
and `main` moves only by a compare-and-swap ref update inside `agentswarm.git.landing`. A conflict
becomes a conflict-resolution task that goes through the swarm like any other.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import GateMode, Settings, get_settings
from agentswarm.db.locks import held_lock, xact_lock
from agentswarm.db.lookup import load_task, missing_is_done
from agentswarm.db.models import MergeAttempt, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.db.states import MERGE_SETTLED
from agentswarm.git.landing import Landing, MergeResult, MergeStrategy, delete_branch, land_branch
from agentswarm.merge.batch import merge_batch
from agentswarm.merge.records import LANDED, MissingHead, record_landing, recorded_head, remote_push_main

log = logging.getLogger(__name__)


def _not_mergeable(db: Session, task: Task) -> str | None:
    """Why the task is not (or no longer) the queue's to land: not complete, or already settled."""
    if task.status != TaskStatus.complete:
        return f"not-complete:{task.status}"
    done = db.scalar(select(MergeAttempt.status).where(
        MergeAttempt.task_id == task.id, MergeAttempt.status.in_(MERGE_SETTLED)).limit(1))
    return f"already:{done}" if done else None


@missing_is_done
def merge_task(task_id: str, settings: Settings | None = None) -> str:
    """Land the head commit a complete task's handoff recorded on main; one already landed is a successful no-op."""
    settings = settings or get_settings()
    if settings.gate is not GateMode.off:
        with held_lock("merge"), session_scope() as db:  # the lock outlives the batch's many commits
            task = load_task(db, task_id)
            return _not_mergeable(db, task) or merge_batch(db, task, settings)
    with session_scope() as db:
        xact_lock(db, "merge")  # held until this transaction ends: one merge at a time
        task = load_task(db, task_id)
        refused = _not_mergeable(db, task)
        if refused:
            return refused
        started_at, t0 = datetime.now(UTC), time.perf_counter()
        strategy = MergeStrategy(settings.merge_strategy.value)
        head = None
        try:
            head = recorded_head(db, task)
            if head is None:
                raise MissingHead(f"task {task.id} has no complete handoff with a head commit to land")
            result = land_branch(str(settings.hub_path), task.branch, strategy, head=head,
                                 message=f"{task.title or task.id} ({task.branch})")
            if result.status in LANDED:
                remote_push_main(settings)
        except MissingHead as exc:
            result = MergeResult(status=Landing.FAILED, branch=task.branch, main_before="", main_after=None,
                                 error=str(exc), duration_ms=(time.perf_counter() - t0) * 1000)
        except Exception as exc:  # git broke in an unexpected way: record, keep the worker alive
            log.exception("merge of %s failed", task.branch)
            result = MergeResult(status=Landing.FAILED, branch=task.branch, main_before="", main_after=None,
                                 conflict_files=[], commits_landed=[], error=f"{type(exc).__name__}: {exc}",
                                 duration_ms=(time.perf_counter() - t0) * 1000)
        record_landing(db, task, strategy.value, result, started_at, settings).head_sha = head
        if result.status in LANDED and settings.merge_delete_branch:
            delete_branch(str(settings.hub_path), task.branch, expected_sha=head)  # kept if it moved since
        return result.status
