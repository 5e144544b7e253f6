"""LLM-call accounting: one row per call (planner, subplanner, worker, reconciler), priced from settings."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.locks import xact_lock
from agentswarm.db.models import LLMCall
from agentswarm.db.text import stored_text
from agentswarm.llm import Usage, estimate_cost_usd
from agentswarm.llm.costs import gpu_cost, token_cost, uncovered_seconds
from agentswarm.llm.endpoints import Endpoint, load_endpoints

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


_named: dict[tuple, dict[str, Endpoint]] = {}


def endpoint_named(settings: Settings, name: str) -> Endpoint | None:
    """The configured endpoint called `name`, or None (a call from before endpoints, or one since removed)."""
    if not name:
        return None
    key = (settings.llm_endpoints, settings.llm_endpoints_file, settings.llm_base_url, settings.llm_model,
           settings.llm_price_in_per_mtok, settings.llm_price_out_per_mtok, settings.llm_gpu_price_per_hour)
    if key not in _named:
        _named[key] = {ep.name: ep for ep in load_endpoints(settings)}
    return _named[key].get(name)


def _gpu_share(session: Session, run_id: str, ep: Endpoint, start: datetime, latency_ms: int) -> float:
    """Dollars for the part of this call's interval that no recorded call of the same endpoint covered."""
    end = start + timedelta(milliseconds=latency_ms)
    # Two recorders at once would both charge the overlap. One lock per run, not per endpoint: a transaction
    # recording calls on two endpoints in one order and another in the other order cannot deadlock.
    xact_lock(session, f"llm-gpu:{run_id}")
    session.flush()
    rows = session.execute(
        select(LLMCall.started_at, LLMCall.latency_ms).where(
            LLMCall.run_id == run_id, LLMCall.endpoint == ep.name, LLMCall.started_at.is_not(None),
            LLMCall.started_at < end, LLMCall.started_at > start - timedelta(days=1))
    ).all()
    others = [(a.timestamp(), a.timestamp() + ms / 1000.0) for a, ms in rows if a is not None]
    seconds = uncovered_seconds((start.timestamp(), end.timestamp()), others)
    return gpu_cost(seconds, ep.gpu_price_per_hour, ep.gpus)


def record_llm_call(
    session: Session, *, run_id: str, task_id: str | None, role: str, model: str, prompt_tokens: int,
    completion_tokens: int, latency_ms: int | float, ok: bool, error: str | None, settings: Settings,
    endpoint: str = "", started_at: float | None = None, usage_estimated: bool = False, attempt: int | None = None,
) -> LLMCall:
    """Add one llm_calls row (committed with the caller's transaction); failed calls are recorded too.

    Priced at its endpoint's prices: tokens, or GPU time shared with the endpoint's overlapping calls.
    `started_at`: wall-clock seconds when the call began (default: its latency before now).
    """
    latency = max(0, int(round(latency_ms or 0)))
    error = stored_text(error, ERROR_CHARS, settings) if error else None  # scrubbed before it is cut
    start = datetime.fromtimestamp(started_at if started_at else time.time() - latency / 1000.0, UTC)
    ep = endpoint_named(settings, endpoint)
    if ep is None:
        cost = call_cost(prompt_tokens or 0, completion_tokens or 0, latency, settings)
    elif ep.gpu_priced:
        cost = _gpu_share(session, run_id, ep, start, latency)
    else:
        cost = token_cost(int(prompt_tokens or 0), int(completion_tokens or 0), ep.price_in_per_mtok,
                          ep.price_out_per_mtok)
    row = LLMCall(
        run_id=run_id, task_id=task_id, role=(role or "")[:16], model=stored_text(model or "", 128, settings),
        prompt_tokens=max(0, int(prompt_tokens or 0)), completion_tokens=max(0, int(completion_tokens or 0)),
        latency_ms=latency, cost_usd=cost, ok=bool(ok), error=error, endpoint=(endpoint or "")[:64],
        usage_estimated=bool(usage_estimated), started_at=start, attempt=attempt,
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
