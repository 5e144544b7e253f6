"""LLM-call accounting: one row per call (planner, subplanner, worker, reconciler), priced from settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.models import LLMCall
from agentswarm.db.text import stored_text
from agentswarm.llm import Usage, estimate_cost_usd

ERROR_CHARS = 2000
ROLES = frozenset({"planner", "subplanner", "worker", "reconciler"})


@dataclass(frozen=True)
class Spend:
    """What a run has used so far."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def call_cost(prompt_tokens: int, completion_tokens: int, latency_ms: int, settings: Settings) -> float:
    """Dollar cost of one call at the configured prices."""
    return estimate_cost_usd(
        Usage(max(0, int(prompt_tokens)), max(0, int(completion_tokens))), max(0, latency_ms) / 1000.0,
        price_in_per_mtok=settings.llm_price_in_per_mtok,
        price_out_per_mtok=settings.llm_price_out_per_mtok,
        gpu_price_per_hour=settings.llm_gpu_price_per_hour,
    )


def record_llm_call(
    session: Session, *, run_id: str, task_id: str | None, role: str, model: str, prompt_tokens: int,
    completion_tokens: int, latency_ms: int | float, ok: bool, error: str | None, settings: Settings,
) -> LLMCall:
    """Add one llm_calls row (committed with the caller's transaction); failed calls are recorded too."""
    latency = max(0, int(round(latency_ms or 0)))
    error = stored_text(error, ERROR_CHARS, settings) if error else None  # scrubbed before it is cut
    row = LLMCall(
        run_id=run_id, task_id=task_id, role=(role or "")[:16], model=stored_text(model or "", 128, settings),
        prompt_tokens=max(0, int(prompt_tokens or 0)), completion_tokens=max(0, int(completion_tokens or 0)),
        latency_ms=latency, cost_usd=call_cost(prompt_tokens or 0, completion_tokens or 0, latency, settings),
        ok=bool(ok), error=error,
    )
    session.add(row)
    return row


def run_spend(session: Session, run_id: str) -> Spend:
    """Calls, tokens and dollars summed over every LLM call of the run."""
    session.flush()
    calls, prompt, completion, cost = session.execute(
        select(func.count(LLMCall.id), func.coalesce(func.sum(LLMCall.prompt_tokens), 0),
               func.coalesce(func.sum(LLMCall.completion_tokens), 0), func.coalesce(func.sum(LLMCall.cost_usd), 0.0))
        .where(LLMCall.run_id == run_id)
    ).one()
    return Spend(int(calls), int(prompt), int(completion), float(cost))
