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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from agentswarm.chaos import strike
from agentswarm.config import GateMode, Settings, get_settings
from agentswarm.db.locks import held_lock, xact_lock
from agentswarm.db.lookup import load_task, missing_is_done
from agentswarm.db.models import MergeAttempt, MergeStatus, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.db.states import MERGE_SETTLED
from agentswarm.git.landing import Landing, MergeResult, MergeStrategy, delete_branch, land_branch
from agentswarm.merge.records import (
    LANDED,
    MissingHead,
    finish_landing,
    landed_branches,
    record_intent,
    record_landing,
    recorded_head,
    remote_push_main,
    settle_landings,
)
from agentswarm.merge.speculation import merge_line

log = logging.getLogger(__name__)


def _not_mergeable(db: Session, task: Task) -> str | None:
    """Why the task is not (or no longer) the queue's to land: not complete, or already settled."""
    if task.status != TaskStatus.complete:
        return f"not-complete:{task.status}"
    done = db.scalar(select(MergeAttempt.status).where(
        MergeAttempt.task_id == task.id, MergeAttempt.status.in_(MERGE_SETTLED)).limit(1))
    return f"already:{done}" if done else None


class Intent:
    """The landing row of one ungated landing, written and committed before each compare-and-swap.

    Committed on a session of its own: the merge's own transaction (which holds the merge lock) commits only after
    main moved, and a crash between the two must still find the row.
    """

    def __init__(self, task: Task, strategy: str, head: str) -> None:
        self.task, self.strategy, self.head = task, strategy, head
        self.row_id: int | None = None

    def __call__(self, main: str, new_head: str, landed: list[str]) -> None:
        with session_scope() as db:
            row = db.get(MergeAttempt, self.row_id) if self.row_id else None
            if row is None:
                row = record_intent(db, self.task, strategy=self.strategy, main_before=main, main_after=new_head,
                                    head=self.head, landed=landed)
                self.row_id = row.id
            else:  # the compare-and-swap was lost: the same row names the new attempt
                row.main_before, row.main_after, row.commits_landed = main, new_head, list(landed)
        strike("merge.before_cas")


def _settle(db: Session, settings: Settings, task_id: str, *, commit: bool = True) -> list[tuple[str, str]]:
    """Under the merge lock: settle what a dead merge left half done, and find this task's landed branch if it is
    still there (a crash between the record and the deletion). With `commit`, commit and delete them now."""
    hub = str(settings.hub_path)
    settled = settle_landings(db, hub)
    leftovers = landed_branches(db, [*settled["merged"], task_id]) if settings.merge_delete_branch else []
    if commit:
        db.commit()
        _delete(settings, leftovers)
        return []
    return leftovers


def _delete(settings: Settings, branches: list[tuple[str, str]]) -> None:
    for branch, head in branches:
        strike("merge.before_delete")
        delete_branch(str(settings.hub_path), branch, expected_sha=head)  # kept if it moved since (or gone)


@missing_is_done
def merge_task(task_id: str, settings: Settings | None = None) -> str:
    """Land the head commit a complete task's handoff recorded on main; one already landed is a successful no-op.

    Crash-consistent (see `merge.records`): the landing row is committed before main moves, becomes `merged` in
    the commit after, and the branch is deleted only once that commit is made; whatever an earlier attempt left
    half done is settled from git first.
    """
    settings = settings or get_settings()
    hub = str(settings.hub_path)
    if settings.gate is not GateMode.off:
        with held_lock("merge"), session_scope() as db:  # the lock outlives the batch's many commits
            _settle(db, settings, task_id)
            task = load_task(db, task_id)
            return _not_mergeable(db, task) or merge_line(db, task, settings)
    landed: tuple[str, str] | None = None
    with session_scope() as db:
        xact_lock(db, "merge")  # held until this transaction ends: one merge at a time
        leftovers = _settle(db, settings, task_id, commit=False)
        task = load_task(db, task_id)
        refused = _not_mergeable(db, task)
        if refused:
            db.commit()  # what was settled is recorded before its branches go
            _delete(settings, leftovers)
            return refused
        started_at, t0 = datetime.now(UTC), time.perf_counter()
        strategy = MergeStrategy(settings.merge_strategy.value)
        head = None
        intent: Intent | None = None
        try:
            head = recorded_head(db, task)
            if head is None:
                raise MissingHead(f"task {task.id} has no complete handoff with a head commit to land")
            intent = Intent(task, strategy.value, head)
            result = land_branch(hub, task.branch, strategy, head=head, before_cas=intent,
                                 message=f"{task.title or task.id} ({task.branch})")
            if result.status in LANDED:
                remote_push_main(settings)
        except MissingHead as exc:
            result = MergeResult(status=Landing.FAILED, branch=task.branch, main_before="", main_after=None,
                                 error=str(exc), duration_ms=(time.perf_counter() - t0) * 1000)
        except Exception as exc:  # git broke in an unexpected way: record, keep the worker alive
            if isinstance(exc, DBAPIError):
                raise  # Postgres went away: the task's retry settles what this attempt left (see tasks.py)
            log.exception("merge of %s failed", task.branch)
            result = MergeResult(status=Landing.FAILED, branch=task.branch, main_before="", main_after=None,
                                 conflict_files=[], commits_landed=[], error=f"{type(exc).__name__}: {exc}",
                                 duration_ms=(time.perf_counter() - t0) * 1000)
        row = db.get(MergeAttempt, intent.row_id) if intent is not None and intent.row_id else None
        if row is not None and result.status is Landing.MERGED:
            strike("merge.after_cas")
            row.main_before, row.main_after = result.main_before, result.main_after
            row.commits_landed = list(result.commits_landed)
            finish_landing(db, row, task, ms=round(result.duration_ms, 1))
        else:
            if row is not None:  # written, but main did not move to it (lost every race, or git failed)
                row.status, row.finished_at, row.error = MergeStatus.abandoned, datetime.now(UTC), result.error
            record_landing(db, task, strategy.value, result, started_at, settings).head_sha = head
        if result.status in LANDED and settings.merge_delete_branch and head:
            landed = (task.branch, head)
    # Only once the landing is committed: a retry never finds its branch gone unrecorded.
    _delete(settings, leftovers + ([landed] if landed else []))
    return result.status
