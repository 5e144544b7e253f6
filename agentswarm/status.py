"""What a person watching the swarm wants to know, as plain data (for the CLI and dashboard)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from agentswarm.db.models import Event, Feature, LLMCall, MergeAttempt, Run, Task


def latest_run(db) -> Run | None:
    """The active run if there is one, else the most recent."""
    active = db.scalars(select(Run).where(Run.status == "active").order_by(Run.started_at.desc())).first()
    return active or db.scalars(select(Run).order_by(Run.started_at.desc())).first()


def run_summary(db, run: Run) -> dict:
    """Counts, throughput and spend of one run."""
    tasks = dict(db.execute(select(Task.status, func.count()).where(Task.run_id == run.id)
                            .group_by(Task.status)).all())
    merges = dict(db.execute(select(MergeAttempt.status, func.count()).join(Task)
                             .where(Task.run_id == run.id).group_by(MergeAttempt.status)).all())
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    merged_hour = db.scalar(select(func.count()).select_from(MergeAttempt).join(Task).where(
        Task.run_id == run.id, MergeAttempt.status == "merged", MergeAttempt.finished_at > hour_ago))
    prompt, completion, cost, calls = db.execute(select(
        func.coalesce(func.sum(LLMCall.prompt_tokens), 0), func.coalesce(func.sum(LLMCall.completion_tokens), 0),
        func.coalesce(func.sum(LLMCall.cost_usd), 0.0), func.count(LLMCall.id),
    ).where(LLMCall.run_id == run.id)).one()
    return {
        "run": run.id, "status": run.status, "stop_reason": run.stop_reason, "demo": run.demo,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "tasks": tasks, "merges": merges, "merged_last_hour": merged_hour,
        "llm": {"calls": calls, "prompt_tokens": int(prompt), "completion_tokens": int(completion),
                "cost_usd": round(float(cost), 4)},
        "budget": {"max_tasks": run.max_tasks, "max_tokens": run.max_tokens, "max_dollars": run.max_dollars,
                   "deadline_at": run.deadline_at.isoformat() if run.deadline_at else None},
    }


def feature_progress(db) -> dict[str, dict[str, int]]:
    """Feature counts per category and status."""
    out: dict[str, dict[str, int]] = {}
    for category, status, n in db.execute(select(Feature.category, Feature.status, func.count())
                                          .group_by(Feature.category, Feature.status)).all():
        out.setdefault(category, {})[status] = n
    return dict(sorted(out.items()))


def recent_events(db, run_id: str | None, limit: int = 20) -> list[dict]:
    """The newest events of a run, oldest first."""
    q = select(Event).order_by(Event.id.desc()).limit(limit)
    if run_id:
        q = q.where(Event.run_id == run_id)
    rows = list(db.scalars(q))[::-1]
    return [{"at": e.created_at.strftime("%H:%M:%S"), "kind": e.kind, "task": e.task_id, "message": e.message}
            for e in rows if e.kind != "metrics.snapshot"]
