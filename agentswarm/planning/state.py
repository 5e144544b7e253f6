"""What the planner reads from Postgres: ready features, open tasks, recent failures.

A feature is ready when it is not done, no open task covers it, its dependencies are done, and
it has not failed too often in this run. An in_progress feature whose tasks all ended without
landing (blocked, cancelled) is ready again; one with a complete task waits for the merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.db.models import (
    Feature,
    FeatureStatus,
    HandoffRecord,
    MergeAttempt,
    MergeStatus,
    Task,
    TaskStatus,
)
from agentswarm.db.states import ENDED_BADLY, OPEN

FEATURES_SHOWN = 60
IN_FLIGHT_SHOWN = 100
FAILURES_SHOWN = 10


class Failure(NamedTuple):
    """A top-level task that ended without landing."""

    task_id: str
    status: str
    error: str


@dataclass
class Board:
    """The planner's view of one run: which features it may plan now and which tasks are open."""

    features: dict[str, Feature]
    open_tasks: list[Task]
    failures_by_feature: dict[str, int]
    completed: set[str]
    max_attempts: int
    last_failure: dict[str, Failure] = field(default_factory=dict)  # per feature: its latest top-level task

    def why_not(self, feature_id: str) -> str | None:
        """None if the feature may get a new task now, else the reason it may not."""
        f = self.features.get(feature_id)
        if f is None:
            return f"unknown feature {feature_id}"
        if f.status == FeatureStatus.done:
            return f"feature {feature_id} is done"
        if any(feature_id in (t.feature_ids or []) for t in self.open_tasks):
            return f"feature {feature_id} already has a task in flight"
        if f.status == FeatureStatus.in_progress and feature_id in self.completed:
            return f"feature {feature_id} has a complete task waiting to land"
        waiting = [d for d in f.dependencies or [] if d in self.features
                   and self.features[d].status != FeatureStatus.done]
        if waiting:
            return f"feature {feature_id} waits for {', '.join(waiting)}"
        if self.failures_by_feature.get(feature_id, 0) >= self.max_attempts:
            return f"feature {feature_id} failed {self.failures_by_feature[feature_id]} times"
        return None

    def in_flight(self, feature_id: str) -> bool:
        """An open task covers the feature, or a complete one waits to land."""
        f = self.features.get(feature_id)
        return any(feature_id in (t.feature_ids or []) for t in self.open_tasks) or (
            f is not None and f.status == FeatureStatus.in_progress and feature_id in self.completed)

    def failed_for_good(self, feature_id: str) -> bool:
        """The planner will not try this feature again in this run (see the module's docstring)."""
        f = self.features.get(feature_id)
        return (f is not None and f.status != FeatureStatus.done and not self.in_flight(feature_id)
                and self.failures_by_feature.get(feature_id, 0) >= self.max_attempts)

    def blocked(self) -> dict[str, list[str]]:
        """{feature: the features that failed for good it waits on, directly or through others}."""
        roots = {fid: {fid} for fid in self.features if self.failed_for_good(fid)}
        waiting = [f for f in self.features.values() if f.id not in roots
                   and f.status != FeatureStatus.done and not self.in_flight(f.id)]
        changed = True
        while changed:  # grows monotonically to a fixpoint; a dependency cycle cannot loop it
            changed = False
            for f in waiting:
                found = set().union(*(roots.get(d, set()) for d in f.dependencies or [] if d in self.features))
                if found - roots.get(f.id, set()):
                    roots[f.id] = roots.get(f.id, set()) | found
                    changed = True
        return {fid: sorted(r) for fid, r in sorted(roots.items()) if fid not in r}

    def ready(self) -> list[Feature]:
        """Features that may be planned now, most urgent first."""
        ready = [f for f in self.features.values() if self.why_not(f.id) is None]
        return sorted(ready, key=lambda f: (f.priority, f.id))

    def duplicate_of(self, title: str, scope: list[str], feature_ids: list[str]) -> str | None:
        """The id of an open task this proposal repeats, if any."""
        key = " ".join(title.lower().split())
        for t in self.open_tasks:
            if " ".join((t.title or "").lower().split()) == key:
                return t.id
            if sorted(t.scope or []) == sorted(scope) and sorted(t.feature_ids or []) == sorted(feature_ids):
                return t.id
        return None


def load_board(session: Session, run_id: str, max_attempts: int) -> Board:
    """Read features, the run's open tasks and its count of failed tasks per feature."""
    features = {f.id: f for f in session.scalars(select(Feature))}
    open_tasks = list(session.scalars(select(Task).where(
        Task.run_id == run_id, Task.status.in_(OPEN)).order_by(Task.created_at)))
    failed: dict[str, int] = {}
    completed: set[str] = set()
    last: dict[str, Failure] = {}
    rows = session.execute(select(Task.id, Task.status, Task.feature_ids, Task.error).where(
        Task.run_id == run_id, Task.parent_id.is_(None), Task.status.in_([*ENDED_BADLY, TaskStatus.complete]))
        .order_by(Task.finished_at.nulls_first(), Task.created_at)).all()
    # A complete branch that conflicted was handed on to a conflict-resolution task, which carries its features
    # from then on (and fails, giving them back, if it never lands): it waits for no merge.
    superseded = set(session.scalars(select(MergeAttempt.task_id).join(Task, Task.id == MergeAttempt.task_id).where(
        Task.run_id == run_id, Task.status == TaskStatus.complete, MergeAttempt.status == MergeStatus.conflict)))
    for task_id, status, ids, error in rows:
        if task_id in superseded:
            continue
        for fid in ids or []:
            if status == TaskStatus.complete:
                completed.add(fid)
            else:
                failed[fid] = failed.get(fid, 0) + 1
                last[fid] = Failure(task_id, status, error or "")
    return Board(features, open_tasks, failed, completed, max_attempts, last)


def features_input(board: Board) -> list[dict]:
    """The <features> section: ready features only (their dependencies are done)."""
    return [{"id": f.id, "category": f.category, "title": f.title, "description": f.description,
             "status": f.status, "priority": f.priority, "files": f.files, "acceptance": f.acceptance,
             "dependencies": f.dependencies} for f in board.ready()[:FEATURES_SHOWN]]


def in_flight_input(board: Board) -> list[dict]:
    """The <in_flight> section: open tasks with their scope and features."""
    return [{"id": t.id, "title": t.title, "status": t.status, "scope": t.scope, "feature_ids": t.feature_ids}
            for t in board.open_tasks[:IN_FLIGHT_SHOWN]]


def failures_input(session: Session, run_id: str) -> list[dict]:
    """The <recent_failures> section: the latest tasks that failed or were blocked, with handoff summaries."""
    tasks = list(session.scalars(select(Task).where(
        Task.run_id == run_id, Task.status.in_([TaskStatus.failed, TaskStatus.blocked]))
        .order_by(Task.finished_at.desc().nulls_last()).limit(FAILURES_SHOWN)))
    if not tasks:
        return []
    latest = select(HandoffRecord.task_id, func.max(HandoffRecord.id).label("hid")).where(
        HandoffRecord.task_id.in_([t.id for t in tasks])).group_by(HandoffRecord.task_id).subquery()
    summaries = dict(session.execute(select(HandoffRecord.task_id, HandoffRecord.summary).join(
        latest, HandoffRecord.id == latest.c.hid)).all())
    return [{"title": t.title, "status": t.status, "scope": t.scope, "feature_ids": t.feature_ids,
             "error": (t.error or "")[:500], "summary": (summaries.get(t.id) or t.summary or "")[:500]}
            for t in tasks]
