"""What a run cost, in figures that add up: per endpoint, per task, per merged commit, and wasted.

Every llm_calls row carries its cost (GPU-hour endpoints' rows share overlapping time, see
accounting.record_llm_call), so the endpoints' costs sum to the run's LLM cost. Wasted spend is what
worker attempts that never landed used: the attempts of tasks that ended without landing, and the
attempts a task made before the one that landed. Modal sandbox time is priced when the backend is Modal.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from agentswarm.config import SandboxBackendName, Settings
from agentswarm.db.models import HandoffRecord, LLMCall, MergeAttempt, MergeStatus, Task
from agentswarm.db.states import ENDED_BADLY
from agentswarm.llm.costs import sandbox_cost, union_seconds


def _round(x: float) -> float:
    return round(float(x), 9)


def by_endpoint(db: Session, run_id: str) -> list[dict[str, Any]]:
    """Calls, failures, tokens, dollars and wall-clock seconds in use, per endpoint."""
    rows = db.execute(select(
        LLMCall.endpoint, func.count(LLMCall.id), func.count(LLMCall.id).filter(LLMCall.ok.is_(False)),
        func.coalesce(func.sum(LLMCall.prompt_tokens), 0), func.coalesce(func.sum(LLMCall.completion_tokens), 0),
        func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
    ).where(LLMCall.run_id == run_id).group_by(LLMCall.endpoint).order_by(LLMCall.endpoint)).all()
    spans: dict[str, list[tuple[float, float]]] = {}
    for name, start, ms in db.execute(select(LLMCall.endpoint, LLMCall.started_at, LLMCall.latency_ms).where(
            LLMCall.run_id == run_id, LLMCall.started_at.is_not(None))):
        if start is not None:  # filtered in the query; the column is nullable for older rows
            spans.setdefault(name, []).append((start.timestamp(), start.timestamp() + ms / 1000.0))
    return [{"endpoint": name or "(unnamed)", "calls": calls, "failed": failed, "prompt_tokens": int(p),
             "completion_tokens": int(c), "cost_usd": _round(cost),
             "busy_s": round(union_seconds(spans.get(name, [])), 3)}
            for name, calls, failed, p, c, cost in rows]


def _wasted_filter(run_id: str) -> Any:
    """Worker calls of a task that ended without landing, or of an attempt before its task's last."""
    return and_(
        LLMCall.run_id == run_id, LLMCall.role == "worker", LLMCall.task_id.is_not(None),
        or_(Task.status.in_(tuple(ENDED_BADLY)), and_(LLMCall.attempt.is_not(None), LLMCall.attempt < Task.attempts)))


def wasted(db: Session, run_id: str) -> dict[str, Any]:
    """Tokens and dollars of worker attempts that never landed."""
    p, c, cost, calls = db.execute(select(
        func.coalesce(func.sum(LLMCall.prompt_tokens), 0), func.coalesce(func.sum(LLMCall.completion_tokens), 0),
        func.coalesce(func.sum(LLMCall.cost_usd), 0.0), func.count(LLMCall.id),
    ).join(Task, Task.id == LLMCall.task_id).where(_wasted_filter(run_id))).one()
    return {"calls": int(calls), "tokens": int(p) + int(c), "cost_usd": _round(cost)}


def sandbox_seconds(db: Session, run_id: str) -> float:
    """Seconds the run's sandboxes ran (every attempt's handoff)."""
    return float(db.scalar(select(func.coalesce(func.sum(HandoffRecord.duration_s), 0.0)).join(Task).where(
        Task.run_id == run_id)) or 0.0)


def task_costs(db: Session, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The costliest tasks: dollars and tokens of every call made for each."""
    rows = db.execute(select(
        LLMCall.task_id, func.sum(LLMCall.cost_usd), func.sum(LLMCall.prompt_tokens + LLMCall.completion_tokens),
        func.count(LLMCall.id), func.max(case((LLMCall.attempt.is_(None), 0), else_=LLMCall.attempt)),
    ).where(LLMCall.run_id == run_id, LLMCall.task_id.is_not(None)).group_by(LLMCall.task_id)
        .order_by(func.sum(LLMCall.cost_usd).desc()).limit(limit)).all()
    return [{"task": t, "cost_usd": _round(cost), "tokens": int(tok), "calls": n, "attempts": a or None}
            for t, cost, tok, n, a in rows]


def task_cost(db: Session, task_id: str) -> dict[str, Any]:
    """One task's calls: dollars and tokens in all, per endpoint, and of its attempts that never landed."""
    rows = db.execute(select(
        LLMCall.endpoint, func.count(LLMCall.id), func.coalesce(func.sum(LLMCall.prompt_tokens + LLMCall.completion_tokens), 0),
        func.coalesce(func.sum(LLMCall.cost_usd), 0.0),
    ).where(LLMCall.task_id == task_id).group_by(LLMCall.endpoint).order_by(LLMCall.endpoint)).all()
    task = db.get(Task, task_id)
    waste = 0.0
    if task is not None:
        waste = float(db.scalar(select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0)).join(
            Task, Task.id == LLMCall.task_id).where(LLMCall.task_id == task_id, _wasted_filter(task.run_id))) or 0.0)
    return {"cost_usd": _round(sum(r[3] for r in rows)), "tokens": int(sum(r[2] for r in rows)),
            "calls": int(sum(r[1] for r in rows)), "wasted_usd": _round(waste),
            "endpoints": {name or "(unnamed)": _round(cost) for name, _, _, cost in rows}}


def cost_report(db: Session, run_id: str, settings: Settings) -> dict[str, Any]:
    """The run's costs: LLM by endpoint, sandboxes (Modal), per task, per merged commit, and wasted."""
    endpoints = by_endpoint(db, run_id)
    llm_usd = sum(e["cost_usd"] for e in endpoints)
    seconds = sandbox_seconds(db, run_id)
    modal = settings.sandbox_backend == SandboxBackendName.modal
    sandbox_usd = sandbox_cost(seconds, settings.sandbox_cpu, settings.sandbox_memory_mb,
                               settings.modal_cpu_price_per_hour, settings.modal_memory_price_per_gib_hour) if modal else 0.0
    total = llm_usd + sandbox_usd
    tasks = int(db.scalar(select(func.count(func.distinct(LLMCall.task_id))).where(
        LLMCall.run_id == run_id, LLMCall.task_id.is_not(None))) or 0)
    commits = sum(len(c or []) for c in db.scalars(select(MergeAttempt.commits_landed).join(Task).where(
        Task.run_id == run_id, MergeAttempt.status == MergeStatus.merged)))
    return {
        "total_usd": _round(total), "llm_usd": _round(llm_usd), "sandbox_usd": _round(sandbox_usd),
        "sandbox_s": round(seconds, 1), "endpoints": endpoints,
        "per_task_usd": _round(total / tasks) if tasks else None,
        "merged_commits": commits, "per_merged_commit_usd": _round(total / commits) if commits else None,
        "wasted": wasted(db, run_id),
    }
