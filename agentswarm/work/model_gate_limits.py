"""What one sandbox may ask of the model through its gate: how large, how many, how fast.

Which requests pass at all is agent/llmproxy.allowed_path (chat completions and the model list).
A chat request's max_tokens is capped. A sandbox's calls, tokens and dollars are counted as the gate
records them (every forwarded attempt, failed ones too) and a call is refused once any budget is
spent, or when it would start more calls in 60 seconds than the rate allows. A refusal is an HTTP
answer with a JSON error the agent's client understands, never an exception in the gate.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from agentswarm.agent.llmproxy import Refusal

log = logging.getLogger("agentswarm.work.model_gate")


@dataclass(frozen=True)
class GateLimits:
    """One sandbox's limits (from settings: LLM_MAX_TOKENS_PER_CALL, SANDBOX_MAX_*, SANDBOX_CALLS_PER_MINUTE)."""

    max_tokens_per_call: int = 16384
    max_calls: int = 400
    max_tokens: int = 2_000_000
    max_cost_usd: float = 25.0  # 0: no dollar limit
    calls_per_minute: int = 120

    @classmethod
    def from_settings(cls, settings: Any) -> GateLimits:
        """The limits a swarm's settings give each sandbox."""
        return cls(settings.llm_max_tokens_per_call, settings.sandbox_max_calls, settings.sandbox_max_tokens,
                   settings.sandbox_max_cost_usd, settings.sandbox_calls_per_minute)


@dataclass(frozen=True)
class Spent:
    """What a sandbox has used through its gate."""

    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


def capped_body(body: bytes, limits: GateLimits, tokens_left: int, model: str | None = None) -> bytes | Refusal:
    """A chat request with max_tokens (and max_completion_tokens) capped, one answer (n=1), and the model set."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        return Refusal(400, "agentswarm gate: a chat request is a JSON object with a 'messages' list",
                       "invalid_request_error")
    cap = max(1, min(limits.max_tokens_per_call, tokens_left))
    data["max_tokens"] = min(_positive(data.get("max_tokens"), cap), cap)
    if "max_completion_tokens" in data:
        data["max_completion_tokens"] = min(_positive(data["max_completion_tokens"], cap), cap)
    if "n" in data:
        data["n"] = 1  # n answers would multiply the completion tokens past the cap
    if model:
        data["model"] = model  # the sandbox knows no endpoint: the route's model
    return json.dumps(data).encode()


def _positive(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


class Budget:
    """One sandbox's ledger: admits calls (rate, budgets, calls in flight), is charged what each recorded call cost."""

    def __init__(self, limits: GateLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._spent = Spent()
        self._in_flight = 0
        self._starts: deque[float] = deque()
        self._told: set[str] = set()

    def spent(self) -> Spent:
        """Calls, tokens and dollars recorded so far."""
        with self._lock:
            return self._spent

    def tokens_left(self) -> int:
        """Tokens this sandbox may still spend."""
        with self._lock:
            return max(0, self.limits.max_tokens - self._spent.tokens)

    def admit(self) -> Ticket | Refusal:
        """A place for one call (charged with its ticket, given back by `settle`), or the refusal."""
        now = time.monotonic()
        with self._lock:
            refusal = self._over(now)
            if refusal is None:
                self._in_flight += 1
                self._starts.append(now)
                return Ticket()
        if refusal.kind not in self._told:
            self._told.add(refusal.kind)
            log.warning("model gate: a sandbox was refused a call: %s", refusal.message)
        return refusal

    def _over(self, now: float) -> Refusal | None:
        lim, spent = self.limits, self._spent
        while self._starts and self._starts[0] <= now - 60.0:
            self._starts.popleft()
        why = ("budget_exceeded", "agentswarm gate: this sandbox's model budget is spent")
        if spent.calls + self._in_flight >= lim.max_calls:
            return Refusal(402, f"{why[1]}: {lim.max_calls} calls (SANDBOX_MAX_CALLS)", why[0])
        if spent.tokens >= lim.max_tokens:
            return Refusal(402, f"{why[1]}: {spent.tokens} of {lim.max_tokens} tokens (SANDBOX_MAX_TOKENS)", why[0])
        if lim.max_cost_usd and spent.cost_usd >= lim.max_cost_usd:
            return Refusal(402, f"{why[1]}: ${spent.cost_usd:.4f} of ${lim.max_cost_usd:g} (SANDBOX_MAX_COST_USD)",
                           why[0])
        if len(self._starts) >= lim.calls_per_minute:
            wait = max(1, int(self._starts[0] + 60.0 - now) + 1)
            return Refusal(429, f"agentswarm gate: rate limit: {lim.calls_per_minute} calls a minute "
                                f"(SANDBOX_CALLS_PER_MINUTE); retry in {wait}s", "rate_limit_exceeded", wait)
        return None

    def settle(self, ticket: Ticket) -> None:
        """The admitted call is over: its place is free if no recorded attempt took it."""
        with self._lock:
            self._release(ticket)

    def charge(self, tokens: int, cost_usd: float, ticket: Ticket | None = None) -> None:
        """One recorded upstream call (the first of an admitted call takes the place its ticket held)."""
        with self._lock:
            s = self._spent
            self._spent = Spent(s.calls + 1, s.tokens + max(0, tokens), s.cost_usd + max(0.0, cost_usd))
            if ticket is not None:
                self._release(ticket)

    def _release(self, ticket: Ticket) -> None:
        if ticket.holding:
            ticket.holding = False
            self._in_flight = max(0, self._in_flight - 1)


@dataclass
class Ticket:
    """An admitted call's place among the calls in flight."""

    holding: bool = True
