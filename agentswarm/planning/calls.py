"""One LLM call made outside any transaction, then recorded (tokens, latency, cost, error) inside one."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.models import LLMCall
from agentswarm.db.text import stored_text
from agentswarm.lifecycle.accounting import record_llm_call
from agentswarm.llm import LLMClient, LLMError
from agentswarm.planning.parsing import reply_text

log = logging.getLogger(__name__)


@dataclass
class CallOutcome:
    """The text a model answered (or the error), with what the call used."""

    text: str | None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the model answered."""
        return self.error is None


def ask(client: LLMClient, messages: list[dict], settings: Settings) -> CallOutcome:
    """Send one chat request; an LLM failure comes back as an outcome with an error, never raised."""
    started = time.monotonic()
    try:
        reply = client.chat(messages, max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature)
    except (LLMError, ValueError) as exc:  # LLMError texts are scrubbed of the key by the client
        elapsed = int((time.monotonic() - started) * 1000)
        log.warning("LLM call failed after %d ms: %s", elapsed, type(exc).__name__)
        error = stored_text(f"{type(exc).__name__}: {exc}", 2000, settings)  # scrubbed before it is cut
        return CallOutcome(None, client.model, latency_ms=elapsed, error=error)
    return CallOutcome(
        reply_text(reply.content, [c.arguments for c in reply.tool_calls]), reply.model,
        reply.usage.prompt_tokens, reply.usage.completion_tokens, int(reply.latency_s * 1000))


def record(session: Session, outcome: CallOutcome, *, run_id: str, task_id: str | None, role: str,
           settings: Settings) -> LLMCall:
    """Store the call in llm_calls, failed or not."""
    return record_llm_call(
        session, run_id=run_id, task_id=task_id, role=role, model=outcome.model,
        prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
        latency_ms=outcome.latency_ms, ok=outcome.ok, error=outcome.error, settings=settings)
