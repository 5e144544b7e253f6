"""Untrusted text on its way into Postgres: every form of every secret is gone, NUL and lone surrogates too.

Real Postgres rows are read back as JSON text and searched for any piece of any form of any secret.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from sqlalchemy import select, text

from agentswarm.agent.contract import Handoff, LLMCallRecord
from agentswarm.control.steering import add_task
from agentswarm.db.events import record_event
from agentswarm.db.models import Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.lifecycle.accounting import ERROR_CHARS, record_llm_call
from agentswarm.lifecycle.handoffs import finish_task
from agentswarm.planning.parsing import TaskDraft
from agentswarm.planning.store import store_task
from tests.support.runs import start

KEY = "sk-orch-LLM/key+0123456789="
TOKEN = "ghp_orchestrator_git_token_42"
DASH = "dashboard-token-abcdef0123"
MODAL = "modal-token-secret-9876543"
SECRETS = (KEY, TOKEN, DASH, MODAL)
NUL, LONE = "\x00", "\ud800"


def forms(secret: str) -> list[str]:
    data = secret.encode()
    out = [secret, data.hex(), quote(secret, safe="")]
    for prefix in (b"", b"p", b"pq"):
        out.append(base64.b64encode(prefix + data + b"!").decode())
        out.append(base64.urlsafe_b64encode(prefix + data + b"!").decode())
    return out


EVERY_FORM = [f for s in SECRETS for f in forms(s)]
LEAKY = f"leak {NUL} {LONE} " + " | ".join(EVERY_FORM)


def _rows_as_text(url: str) -> str:
    with session_scope(url) as s:
        return "\n".join(
            s.execute(text(f"select coalesce(string_agg(row_to_json(x)::text, E'\\n'), '') from {table} x")).scalar_one()
            for table in ("runs", "tasks", "handoffs", "llm_calls", "events")
        )


def _assert_clean(stored: str) -> None:
    assert "\\u0000" not in stored and NUL not in stored
    for form in EVERY_FORM:
        pieces = [form[i:i + 12] for i in range(len(form) - 11)]
        assert not [p for p in pieces if p in stored], form


def test_handoff_llm_calls_events_and_task_texts_are_scrubbed_and_cleaned(db, make_settings, redis_client,
                                                                          monkeypatch) -> None:
    # record_event has no settings argument: it scrubs with the process's settings, read from the environment.
    monkeypatch.setenv("LLM_API_KEY", KEY)
    monkeypatch.setenv("GIT_TOKEN", TOKEN)
    monkeypatch.setenv("AGENTSWARM_DASHBOARD_TOKEN", DASH)
    monkeypatch.setenv("MODAL_TOKEN_SECRET", MODAL)
    settings = make_settings(llm_api_key=KEY, git_token=TOKEN)
    run_id = start(settings)
    with session_scope(db) as s:
        task = Task(run_id=run_id, description="d", branch="x", status=TaskStatus.running, attempts=1)
        s.add(task)
        s.flush()
        task_id = task.id
    # A blocked handoff whose summary carries a NUL: the task must still reach its end state.
    h = Handoff(task_id=task_id, status="blocked", summary=LEAKY, error="E: " + LEAKY, transcript="T: " + LEAKY,
                llm_calls=[LLMCallRecord(prompt_tokens=1, completion_tokens=1, model="m" + NUL, ok=False,
                                         error=LEAKY)])
    assert finish_task(task_id, 1, None, h, settings) == "blocked"
    with session_scope(db) as s:
        # An LLM-call error whose cut (ERROR_CHARS) falls inside the key.
        record_llm_call(s, run_id=run_id, task_id=None, role="planner", model="m", prompt_tokens=0,
                        completion_tokens=0, latency_ms=1, ok=False, error="x" * (ERROR_CHARS - 10) + KEY + LEAKY,
                        settings=settings)
        record_event(s, "test.leak", LEAKY, run_id=run_id, detail=LEAKY, nested={"k": [LEAKY]})
        draft = TaskDraft(title="T " + LEAKY, description="D " + LEAKY, scope=["src/a.ts"],
                          acceptance=["A " + LEAKY], priority=3, feature_ids=[], kind="feature")
        store_task(s, draft, run_id=run_id, base_sha=None, settings=settings)
        add_task(s, settings, "manual " + LEAKY, ["src/b.ts"], 3, "title " + LEAKY)
    with session_scope(db) as s:
        done = s.get(Task, task_id)
        assert done is not None and done.status == TaskStatus.blocked
        assert done.summary is not None and "***" in done.summary and "leak" in done.summary
        assert len(s.scalars(select(Task).where(Task.run_id == run_id)).all()) == 3
    stored = _rows_as_text(db)
    assert "test.leak" in stored and "***" in stored
    _assert_clean(stored)
