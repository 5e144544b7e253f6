"""Run budgets: tokens, dollars, tasks, a deadline, planner iterations. Pure checks, no state changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.models import Run, Task
from agentswarm.lifecycle.accounting import run_spend

DEFAULT_PLANNER_ITERATIONS = 100  # the least cap a run gets (SEED-PLAN's figure)


@dataclass(frozen=True)
class BudgetHit:
    """A budget the run has reached. `drain`: stop planning but let the tasks already made run."""

    name: str  # deadline | dollars | tokens | tasks | iterations
    reason: str
    drain: bool


def task_count(session: Session, run_id: str) -> int:
    """Every task the run has created (root, children, fixes, conflicts)."""
    session.flush()
    return int(session.scalar(select(func.count(Task.id)).where(Task.run_id == run_id)) or 0)


def max_iterations(run: Run, settings: Settings) -> int:
    """The run's planner-iteration cap (fixed at start, else from settings)."""
    value = (run.config or {}).get("max_planner_iterations")
    if isinstance(value, int) and value > 0:
        return value
    return settings.max_planner_iterations or DEFAULT_PLANNER_ITERATIONS


def tasks_left(session: Session, run: Run) -> int:
    """How many more tasks the run may create."""
    return max(0, run.max_tasks - task_count(session, run.id))


def check_budgets(session: Session, run: Run, settings: Settings, now: datetime | None = None) -> BudgetHit | None:
    """The first budget the run has reached, or None. Money and time first: they end the run at once."""
    now = now or datetime.now(UTC)
    if run.deadline_at is not None and now >= run.deadline_at:
        return BudgetHit("deadline", f"deadline reached at {run.deadline_at.isoformat(timespec='seconds')}", False)
    spend = run_spend(session, run.id)
    if spend.cost_usd >= run.max_dollars:
        return BudgetHit("dollars", f"dollar budget reached: ${spend.cost_usd:.4f} of ${run.max_dollars:.2f}", False)
    if spend.tokens >= run.max_tokens:
        return BudgetHit("tokens", f"token budget reached: {spend.tokens} of {run.max_tokens} tokens", False)
    count = task_count(session, run.id)
    if count >= run.max_tasks:
        return BudgetHit("tasks", f"task budget reached: {count} of {run.max_tasks} tasks", True)
    cap = max_iterations(run, settings)
    if run.planner_iterations >= cap:
        return BudgetHit("iterations", f"planner iterations reached: {run.planner_iterations} of {cap}", True)
    return None
