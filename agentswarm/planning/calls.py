"""One LLM call made outside any transaction, then recorded (tokens, latency, cost, error) inside one.

A reply cut off by the token limit (finish_reason "length") before its JSON closed is asked again once
for a smaller batch, unless its complete tasks already fill one; otherwise parsing takes only the
complete tasks. Every call made is recorded, with an event for a cut and for usage the server did not
report (then estimated from characters, so budgets still count it).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import LLMCall
from agentswarm.db.text import stored_text
from agentswarm.lifecycle.accounting import record_llm_call
from agentswarm.llm import ChatClient, LLMError
from agentswarm.planning.parsing import reply_text
from agentswarm.planning.reading import UnparseableReply, read_reply

log = logging.getLogger(__name__)
# The prompts end with "Return at most N tasks (children) in this answer": the batch a cut reply was asked for.
_ASKED = re.compile(r"at most (\d+) (?:tasks|children) in this answer")
SMALLER = ("Your previous answer was cut off by the token limit before its JSON array closed{after}. "
           "Answer again, complete this time: at most {n} {noun} in this answer, with shorter descriptions, "
           "as a JSON array and nothing else.")


@dataclass
class CallOutcome:
    """The text a model answered (or the error), with what the call used."""

    text: str | None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: int = 0
    error: str | None = None
    finish_reason: str | None = None
    usage_estimated: bool = False  # the server reported no usage: the counts are estimated from characters
    endpoint: str = ""  # the LLM_ENDPOINTS entry that answered (or failed last)
    started_at: float | None = None  # wall clock when the call began
    earlier: list[CallOutcome] = field(default_factory=list)  # calls made before this one for the same answer
    note: str | None = None  # what happened to a cut reply

    @property
    def ok(self) -> bool:
        """True when the model answered."""
        return self.error is None


def _call(client: ChatClient, messages: list[dict], settings: Settings) -> CallOutcome:
    started = time.monotonic()
    try:
        reply = client.chat(messages, max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature)
    except (LLMError, ValueError) as exc:  # LLMError texts are scrubbed of the key by the client
        elapsed = int((time.monotonic() - started) * 1000)
        log.warning("LLM call failed after %d ms: %s", elapsed, type(exc).__name__)
        error = stored_text(f"{type(exc).__name__}: {exc}", 2000, settings)  # scrubbed before it is cut
        return CallOutcome(None, client.model, latency_ms=elapsed, error=error,
                           endpoint=getattr(exc, "endpoint", ""), started_at=getattr(exc, "started_at", None),
                           earlier=_failovers(getattr(exc, "failovers", []), settings))
    return CallOutcome(
        reply_text(reply.content, [c.arguments for c in reply.tool_calls]), reply.model,
        reply.usage.prompt_tokens, reply.usage.completion_tokens, int(reply.latency_s * 1000),
        finish_reason=reply.finish_reason, usage_estimated=reply.usage.estimated,
        endpoint=getattr(reply, "endpoint", ""), started_at=getattr(reply, "started_at", None) or None,
        earlier=_failovers(getattr(reply, "failovers", []), settings))


def _failovers(attempts: list[dict], settings: Settings) -> list[CallOutcome]:
    """The attempts endpoints failed before the router went to the next one, to be recorded as failed calls."""
    return [CallOutcome(None, a["model"], latency_ms=a["latency_ms"], endpoint=a["endpoint"],
                        started_at=a["started_at"], error=stored_text(f"{a['error']}; failed over", 2000, settings))
            for a in attempts]


def complete_tasks(outcome: CallOutcome) -> int | None:
    """How many complete tasks a reply cut by the token limit holds; None when it was not cut."""
    if not outcome.ok or outcome.finish_reason != "length":
        return None
    try:
        reading = read_reply(outcome.text)
    except UnparseableReply:
        return 0
    return len(reading.items) if reading.cut else None


def ask(client: ChatClient, messages: list[dict], settings: Settings, *, batch: int | None = None) -> CallOutcome:
    """Send one chat request (twice for a cut reply); an LLM failure comes back as an outcome with an error.

    `batch`: how many tasks the prompt asked for (read from the prompt when not given).
    """
    first = _call(client, messages, settings)
    complete = complete_tasks(first)
    if complete is None:
        return first
    asked = batch or _asked_for(messages)
    smaller = max(1, asked // 2) if asked else 1
    if complete >= smaller:
        first.note = f"cut off by the token limit: the {complete} complete tasks before the cut are taken"
        return first
    noun = "children" if "children in this answer" in _last_user(messages) else "tasks"
    after = f" after {complete} complete {noun}" if complete else ""
    again = messages + [{"role": "user", "content": SMALLER.format(after=after, n=smaller, noun=noun)}]
    second = _call(client, again, settings)
    first.note = f"cut off by the token limit with {complete} complete tasks; asked again for at most {smaller}"
    left = complete_tasks(second)
    if second.ok and (left is None or left > complete):
        if left is not None:
            second.note = f"cut off by the token limit again: the {left} complete tasks before the cut are taken"
        second.earlier += [first]
        return second
    first.earlier += [second]  # the retry failed or holds less: the first reply's complete tasks stand
    first.note = (f"cut off by the token limit with {complete} complete tasks, taken; asking again for at most "
                  f"{smaller} gave {'an error' if not second.ok else f'{left} complete tasks'}")
    return first


def _last_user(messages: list[dict]) -> str:
    return next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")


def _asked_for(messages: list[dict]) -> int | None:
    found = _ASKED.search(_last_user(messages))
    return int(found.group(1)) if found else None


def _in_order(outcome: CallOutcome) -> list[CallOutcome]:
    """The outcome after every call made before it (and those made before them)."""
    return [one for e in outcome.earlier for one in _in_order(e)] + [outcome]


def record(session: Session, outcome: CallOutcome, *, run_id: str, task_id: str | None, role: str,
           settings: Settings) -> LLMCall:
    """Store the call in llm_calls, failed or not (and any made before it for the same answer)."""
    row: LLMCall | None = None
    for one in _in_order(outcome):
        row = record_llm_call(
            session, run_id=run_id, task_id=task_id, role=role, model=one.model,
            prompt_tokens=one.prompt_tokens, completion_tokens=one.completion_tokens,
            latency_ms=one.latency_ms, ok=one.ok, error=one.error, settings=settings, endpoint=one.endpoint,
            started_at=one.started_at, usage_estimated=one.usage_estimated)
        if one.usage_estimated:
            session.flush()
            record_event(session, "llm.usage_estimated", f"{role}: the server reported no usage; counted "
                         f"{one.prompt_tokens}+{one.completion_tokens} tokens from characters", run_id=run_id,
                         task_id=task_id, llm_call_id=row.id, role=role, prompt_tokens=one.prompt_tokens,
                         completion_tokens=one.completion_tokens)
        if one.note:
            record_event(session, f"{role}.reply_cut", f"reply {one.note}", run_id=run_id, task_id=task_id,
                         finish_reason=one.finish_reason)
    assert row is not None
    return row
