"""A handoff carrying a secret hidden from a plain search (NUL-split, escaped, wrapped, grouped) is stored without it.

The agent writes the summary and the transcript; the orchestrator scrubs them before they reach Postgres
(lifecycle/handoffs.safe_handoff). Read back from the real rows, no piece of the key may remain.
"""

from __future__ import annotations

import base64
import json

from sqlalchemy import text

from agentswarm.agent.contract import Handoff
from agentswarm.agent.transcript import Transcript
from agentswarm.db.models import Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.lifecycle.handoffs import finish_task
from tests.support.runs import start

KEY = "sk-orch-LLM-key-0123456789abcdefXYZ"


def _hidden_forms() -> list[str]:
    b64 = base64.b64encode(b"-----BEGIN KEY-----" + KEY.encode() + b"-----END KEY-----").decode()
    hexed = KEY.encode().hex()
    return [
        KEY[:10] + "\x00" + KEY[10:],  # split by a NUL
        KEY[:5] + "\x1b[0m" + KEY[5:20] + "\u200b" + KEY[20:],  # an ANSI reset and a zero-width space
        "\n".join(b64[i:i + 16] for i in range(0, len(b64), 16)),  # base64 wrapped across lines
        " ".join(hexed[i:i + 4] for i in range(0, len(hexed), 4)),  # grouped hex
        ":".join(hexed[i:i + 2] for i in range(0, len(hexed), 2)).upper(),
    ]


def _assert_no_piece(stored: str) -> None:
    flat = json.loads(json.dumps(stored))  # as a reader of the JSON would see it
    for view in (stored, flat, stored.replace("\\u0000", "").replace("\\n", "").replace(" ", "").replace(":", "")):
        for form in (KEY, KEY.encode().hex(), base64.b64encode(KEY.encode()).decode()[2:-2]):
            pieces = [form[i:i + 12] for i in range(len(form) - 11)]
            found = [p for p in pieces if p.lower() in view.lower()]
            assert not found, (form, found)


def test_nul_split_wrapped_and_grouped_keys_never_reach_the_handoff_or_transcript(db, make_settings, redis_client,
                                                                                 tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LLM_API_KEY", KEY)
    settings = make_settings(llm_api_key=KEY)
    run_id = start(settings)
    with session_scope(db) as s:
        task = Task(run_id=run_id, description="d", branch="x", status=TaskStatus.running, attempts=1)
        s.add(task)
        s.flush()
        task_id = task.id
    forms = _hidden_forms()
    # The transcript as the runner writes it (JSON lines: a NUL becomes the six characters \u0000), but from
    # an agent that bypassed its scrubbing: no secrets known to this Transcript.
    lines = Transcript(tmp_path / "t.jsonl", secrets=[])
    for form in forms:
        lines.add("tool", name="run", result=f"printed: {form}")
    summary = "done. " + " | ".join(forms)
    h = Handoff(task_id=task_id, status="blocked", summary=summary, error="E " + summary,
                transcript=(tmp_path / "t.jsonl").read_text())
    assert "\\u0000" in h.transcript and KEY[:10] + "\\u0000" in h.transcript
    assert finish_task(task_id, 1, None, h, settings) == "blocked"
    with session_scope(db) as s:
        row = s.execute(text("select summary, error, transcript from handoffs where task_id = :t"), {"t": task_id}).one()
        task_row = s.execute(text("select summary, error from tasks where id = :t"), {"t": task_id}).one()
    for stored in (*row, *task_row):
        assert stored and "***" in stored
        _assert_no_piece(stored)
    assert "printed:" in row.transcript and "done." in row.summary
