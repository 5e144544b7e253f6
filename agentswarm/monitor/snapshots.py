"""Metric snapshots: every monitor tick stores a run's figures as one row; the history charts read them back.

A snapshot holds what a person watches over time (FIELDS): branches landed in the last hour, tasks in flight
and pending, the queue depths, tokens and dollars spent so far, main's latest verdict, and the seconds the gate
has spent running its checks. Rows older than SNAPSHOT_RETENTION_HOURS go, and so do the oldest of a run past
SNAPSHOT_MAX_ROWS, in the same tick: the table stays bounded however long a run lasts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from agentswarm.control.status import run_summary
from agentswarm.db.models import Event, MainCheck, MetricSnapshot, Run, TaskStatus
from agentswarm.queue.broker import queue_lengths

FIELDS = ("landed_last_hour", "in_flight", "pending", "queues", "tokens", "cost_usd", "main", "gate_seconds")
IN_FLIGHT = (TaskStatus.assigned, TaskStatus.running)


def figures(db: Session, client: redis.Redis | None, run: Run) -> dict[str, Any]:
    """A run's figures now; `queues` is None when Redis does not answer (a snapshot is still taken)."""
    summary = run_summary(db, run)
    tasks = {str(k): v for k, v in summary["tasks"].items()}
    try:
        queues = queue_lengths(client) if client is not None else None
    except redis.RedisError:
        queues = None
    main = db.scalar(select(MainCheck.result).where(MainCheck.run_id == run.id)
                     .order_by(MainCheck.started_at.desc(), MainCheck.id.desc()).limit(1))
    gate_s = db.scalar(select(func.coalesce(func.sum(Event.data["seconds"].as_float()), 0.0)).where(
        Event.run_id == run.id, Event.kind == "gate.run"))
    llm = summary["llm"]
    return {
        "landed_last_hour": summary["merged_last_hour"] or 0,
        "in_flight": sum(tasks.get(s.value, 0) for s in IN_FLIGHT),
        "pending": tasks.get(TaskStatus.pending.value, 0),
        "tasks": tasks,
        "queues": queues,
        "tokens": llm["prompt_tokens"] + llm["completion_tokens"],
        "cost_usd": llm["cost_usd"],
        "main": main,
        "gate_seconds": round(float(gate_s or 0.0), 1),
    }


def record_snapshot(db: Session, client: redis.Redis | None, run: Run, at: datetime | None = None) -> MetricSnapshot:
    """Store the run's figures now (committed with the caller's transaction)."""
    row = MetricSnapshot(run_id=run.id, data=figures(db, client, run))
    if at is not None:
        row.taken_at = at
    db.add(row)
    db.flush()
    return row


def prune_snapshots(db: Session, retention_hours: float, max_rows: int, now: datetime | None = None) -> int:
    """Delete snapshots older than the retention, and each run's oldest past `max_rows`; how many went."""
    cutoff = (now or datetime.now(UTC)) - timedelta(hours=retention_hours)
    gone = _deleted(db, delete(MetricSnapshot).where(MetricSnapshot.taken_at < cutoff))
    crowded = db.scalars(select(MetricSnapshot.run_id).group_by(MetricSnapshot.run_id)
                         .having(func.count() > max_rows)).all()
    for run_id in crowded:
        newest = (select(MetricSnapshot.id).where(MetricSnapshot.run_id == run_id)
                  .order_by(MetricSnapshot.taken_at.desc(), MetricSnapshot.id.desc()).limit(max_rows))
        gone += _deleted(db, delete(MetricSnapshot).where(MetricSnapshot.run_id == run_id,
                                                          MetricSnapshot.id.not_in(newest)))
    return gone


def _deleted(db: Session, statement: Any) -> int:
    result = cast(CursorResult, db.execute(statement.execution_options(synchronize_session=False)))
    return result.rowcount or 0
