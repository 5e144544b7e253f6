"""SQLAlchemy 2 models: the record of every run, task, handoff, merge, LLM call and event."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from agentswarm.agent.contract import MEASURED_FIELDS

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    """A short random id; task ids also name branches (`swarm/<id>`)."""
    return uuid.uuid4().hex[:12]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSONB, list[str]: JSONB, list[Any]: JSONB}


class TaskStatus(StrEnum):
    pending = "pending"
    assigned = "assigned"
    running = "running"
    complete = "complete"
    failed = "failed"
    blocked = "blocked"
    cancelled = "cancelled"


class TaskKind(StrEnum):
    feature = "feature"
    fix = "fix"
    conflict = "conflict"
    manual = "manual"
    revert = "revert"  # made by the reconciler: a revert commit of a branch that broke main, landed by the queue


class RunStatus(StrEnum):
    active = "active"
    finished = "finished"
    stopped = "stopped"


class MergeStatus(StrEnum):
    queued = "queued"
    landing = "landing"  # committed before main moves, main_after the sha it is about to move to; then merged
    abandoned = "abandoned"  # a landing whose compare-and-swap never happened (the merge stage died first)
    merged = "merged"
    conflict = "conflict"
    failed = "failed"
    rejected = "rejected"  # the gate found this branch broke the build: back to its author
    reverted = "reverted"  # it landed, broke main, and a revert of it landed: its task was reopened


class FeatureStatus(StrEnum):
    pending = "pending"
    in_progress = "in_progress"
    done = "done"
    failed = "failed"
    blocked = "blocked"  # a dependency failed for good (maybe through others): nothing happens without a person


E = TypeVar("E", bound=StrEnum)


class StatusString(TypeDecorator[E], Generic[E]):
    """A status stored as a plain string (no PG enum: a new state needs no type migration), read as its enum."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E]):
        super().__init__(max(len(m.value) for m in enum) + 8)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    status: Mapped[RunStatus] = mapped_column(StatusString(RunStatus), default=RunStatus.active, index=True)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    demo: Mapped[bool] = mapped_column(Boolean, default=False)
    max_tasks: Mapped[int] = mapped_column(Integer)
    max_tokens: Mapped[int] = mapped_column(BigInteger)
    max_dollars: Mapped[float] = mapped_column(Float)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    planner_iterations: Mapped[int] = mapped_column(Integer, default=0)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # set: no dispatch, no planning
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_run_id_status", "run_id", "status"),
                      Index("uq_tasks_run_id_request_key", "run_id", "request_key", unique=True))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"), index=True)
    origin_id: Mapped[str | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), index=True
    )  # the task a conflict/fix task was made for
    kind: Mapped[TaskKind] = mapped_column(StatusString(TaskKind), default=TaskKind.feature)
    status: Mapped[TaskStatus] = mapped_column(StatusString(TaskStatus), default=TaskStatus.pending)
    title: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text)
    scope: Mapped[list[str]] = mapped_column(default=list)
    acceptance: Mapped[list[str]] = mapped_column(default=list)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    branch: Mapped[str] = mapped_column(String(128))
    base_sha: Mapped[str | None] = mapped_column(String(64))
    feature_ids: Mapped[list[str]] = mapped_column(default=list)
    depth: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    sandbox_id: Mapped[str | None] = mapped_column(String(128))
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    request_key: Mapped[str | None] = mapped_column(String(128))  # a caller's key: the same key, the same task
    summary: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    children: Mapped[list[Task]] = relationship(foreign_keys=[parent_id], back_populates="parent")
    parent: Mapped[Task | None] = relationship(
        foreign_keys=[parent_id], back_populates="children", remote_side=[id]
    )


class GitMeasureColumns:
    """One column per git-measured handoff field (`agent.contract.GitMeasure`, checked below)."""

    commits: Mapped[list[str]] = mapped_column(default=list)
    head_sha: Mapped[str | None] = mapped_column(String(64))
    files_changed: Mapped[list[str]] = mapped_column(default=list)
    insertions: Mapped[int] = mapped_column(Integer, default=0)
    deletions: Mapped[int] = mapped_column(Integer, default=0)


if tuple(GitMeasureColumns.__annotations__) != MEASURED_FIELDS:
    raise RuntimeError(f"GitMeasureColumns {tuple(GitMeasureColumns.__annotations__)} != {MEASURED_FIELDS}")


class HandoffRecord(GitMeasureColumns, Base):
    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text)
    transcript: Mapped[str] = mapped_column(Text, default="")
    presubmit: Mapped[list[Any]] = mapped_column(default=list)  # the runner's checks of the branch, in order
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LiveStep(Base):
    """A piece of a running attempt's transcript, read from its sandbox while it works (whole JSONL lines).

    Written by the orchestrator with the heartbeat, capped per attempt; an attempt's pieces are deleted when
    its handoff (with the whole transcript) is stored, so only running or lost attempts keep any.
    """

    __tablename__ = "live_steps"
    __table_args__ = (Index("ix_live_steps_task_id_attempt", "task_id", "attempt", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)  # bytes of the sandbox's transcript read after this
    lines: Mapped[str] = mapped_column(Text, default="")  # whole JSONL lines, scrubbed
    events: Mapped[int] = mapped_column(Integer, default=0)  # how many lines
    gate_calls: Mapped[int] = mapped_column(Integer, default=0)  # LLM calls the orchestrator's gate had seen by then
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MergeAttempt(Base):
    __tablename__ = "merge_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    branch: Mapped[str] = mapped_column(String(128))
    strategy: Mapped[str] = mapped_column(String(16))
    status: Mapped[MergeStatus] = mapped_column(StatusString(MergeStatus), default=MergeStatus.queued, index=True)
    main_before: Mapped[str | None] = mapped_column(String(64))
    main_after: Mapped[str | None] = mapped_column(String(64))
    conflict_files: Mapped[list[str]] = mapped_column(default=list)
    commits_landed: Mapped[list[str]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text)
    head_sha: Mapped[str | None] = mapped_column(String(64))  # the recorded head this attempt tried to land
    batch_id: Mapped[str | None] = mapped_column(String(32), index=True)  # the gated batch it was tested in
    position: Mapped[int | None] = mapped_column(Integer)  # its place in the batch's stack, from 0
    tree_sha: Mapped[str | None] = mapped_column(String(64))  # the tree the gate passed (merged) or failed (rejected)
    gate: Mapped[dict[str, Any]] = mapped_column(default=dict)  # runs, commands, durations, output, flaky, clash
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float | None] = mapped_column(Float)


class LLMCall(Base):
    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # planner|subplanner|worker|reconciler
    model: Mapped[str] = mapped_column(String(128), default="")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    endpoint: Mapped[str] = mapped_column(String(64), default="", server_default="")  # LLM_ENDPOINTS name
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # wall clock: GPU-hour sharing
    attempt: Mapped[int | None] = mapped_column(Integer)  # the task's attempt (worker calls): wasted spend

    __table_args__ = (Index("ix_llm_calls_run_id_endpoint", "run_id", "endpoint"),)


class Feature(Base):
    __tablename__ = "features"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    category: Mapped[str] = mapped_column(String(32), index=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=5)
    status: Mapped[FeatureStatus] = mapped_column(StatusString(FeatureStatus), default=FeatureStatus.pending)
    files: Mapped[list[str]] = mapped_column(default=list)
    dependencies: Mapped[list[str]] = mapped_column(default=list)
    acceptance: Mapped[list[str]] = mapped_column(default=list)
    blocked_by: Mapped[str | None] = mapped_column(String(64))  # blocked: the feature that failed for good
    status_reason: Mapped[str | None] = mapped_column(Text)  # why it is blocked, or why it failed for good
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class Event(Base):
    """Append-only feed for the CLI and dashboard."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str | None] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MainCheck(Base):
    """One reconciler check of a main sha: the slow checks' verdict and what was done about a red one."""

    __tablename__ = "main_checks"
    __table_args__ = (Index("ix_main_checks_run_id_started_at", "run_id", "started_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    sha: Mapped[str] = mapped_column(String(64), index=True)
    result: Mapped[str] = mapped_column(String(16))  # green | red | cannot-run
    checks: Mapped[list[Any]] = mapped_column(default=list)  # each command: exit code, seconds, timed out
    output: Mapped[str] = mapped_column(Text, default="")  # the failing commands' output, capped
    failing_tests: Mapped[list[str]] = mapped_column(default=list)
    quarantined: Mapped[list[str]] = mapped_column(default=list)  # quarantined tests that failed here, tolerated
    action: Mapped[str | None] = mapped_column(String(16))  # revert | fix | None
    culprit_sha: Mapped[str | None] = mapped_column(String(64))
    culprit_task_id: Mapped[str | None] = mapped_column(String(32))
    revert_task_id: Mapped[str | None] = mapped_column(String(32))
    bisect: Mapped[dict[str, Any]] = mapped_column(default=dict)  # range, steps, first bad, or why inconclusive
    screenshot: Mapped[str | None] = mapped_column(String(128))  # file name under the screenshots directory
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float] = mapped_column(Float, default=0.0)


class GateRunRow(Base):
    """One gate run asked for by the merge queue and taken by a gate worker (`merge.runs`).

    The merge queue writes it (`queued`) and reads its result; a gate worker claims it (`running`, with a lease it
    renews), and writes the result (`done`) only while it still holds it. `cancelled`: the merge queue no longer
    wants it (an earlier batch was red). `spec` holds what a batch run stacked (tasks, heads, tips), so a merge
    worker that takes over can adopt the runs its predecessor left in flight.
    """

    __tablename__ = "gate_runs"
    __table_args__ = (Index("ix_gate_runs_state", "state", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    batch_id: Mapped[str] = mapped_column(String(32), default="")
    stage: Mapped[str] = mapped_column(String(32), default="batch")  # batch, rest, bisect, confirm, ...
    lane: Mapped[int | None] = mapped_column(Integer)  # its place in the speculative pipeline, from 0 (batch runs)
    sha: Mapped[str] = mapped_column(String(64))
    base: Mapped[str] = mapped_column(String(64))
    tree: Mapped[str] = mapped_column(String(64))  # the tree of sha as the merge queue sees it
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")  # queued, running, done, cancelled
    worker: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)  # GateRun.to_dict() of the worker's run
    tested_tree: Mapped[str | None] = mapped_column(String(64))  # the tree the worker tested (checked on use)
    seconds: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(16))  # what the merge queue made of it: landed, red, ...
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FlakyStatus(StrEnum):
    observed = "observed"  # seen failing then passing on the same tree, fewer than FLAKY_QUARANTINE_AFTER times
    quarantined = "quarantined"  # the gate excludes it; the reconciler runs it and reports it
    released = "released"  # passed FLAKY_RELEASE_AFTER reconciler runs in a row after quarantine


class FlakyTest(Base):
    """A test seen failing and then passing on the same tree: counted, quarantined, released."""

    __tablename__ = "flaky_tests"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, unique=True)  # "file > suite > test", as vitest names it
    file: Mapped[str] = mapped_column(Text)
    status: Mapped[FlakyStatus] = mapped_column(StatusString(FlakyStatus), default=FlakyStatus.observed, index=True)
    observations: Mapped[int] = mapped_column(Integer, default=0)
    passes_in_row: Mapped[int] = mapped_column(Integer, default=0)  # reconciler runs it passed since quarantine
    last_source: Mapped[str] = mapped_column(String(16), default="")  # gate | reconciler
    last_tree: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))  # of the last observation
    fix_task_id: Mapped[str | None] = mapped_column(String(32))  # the one fix task made when it was quarantined
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    quarantined_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MetricSnapshot(Base):
    """One monitor tick's figures of a run (agentswarm/monitor/snapshots.py): the dashboard's history charts.

    Pruned by the monitor: older than SNAPSHOT_RETENTION_HOURS, or past SNAPSHOT_MAX_ROWS per run, are deleted.
    """

    __tablename__ = "metric_snapshots"
    __table_args__ = (Index("ix_metric_snapshots_run_id_taken_at", "run_id", "taken_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    taken_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)  # see snapshots.FIELDS
