"""The log viewer of a running attempt: the lines read from its sandbox so far, marked live, then its handoff."""

from __future__ import annotations

import json
import re

import pytest

from agentswarm.agent.contract import Handoff
from agentswarm.db.models import Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.lifecycle.handoffs import store_handoff
from agentswarm.lifecycle.progress import add_live_step
from tests.dashboard.test_browser import CHROMIUM, _dump


def line(kind: str, **data: object) -> str:
    return json.dumps({"t": 1700000000.0, "kind": kind, **data}) + "\n"


def _running(dash) -> tuple[str, int]:
    task = dash.get("/api/tasks?status=running&limit=1").json()["tasks"][0]
    return task["id"], task["attempts"]


def _step(db, task_id: str, attempt: int, text: str) -> None:
    with session_scope(db) as s:
        add_live_step(s, task_id, attempt, offset=len(text), lines=text, events=text.count("\n"))


def test_a_running_attempt_shows_its_steps_live_then_its_handoff(dash, sample, db, make_settings):
    task_id, attempt = _running(dash)
    url = f"/api/tasks/{task_id}/transcript"
    empty = dash.get(url).json()
    assert (empty["attempt"], empty["live"], empty["status"], empty["entries"]) == (attempt, True, "running", [])
    _step(db, task_id, attempt, line("assistant", step=1, content="reading", prompt_tokens=900, completion_tokens=40))
    _step(db, task_id, attempt, line("tool", name="run", result="ok"))
    live = dash.get(url).json()
    assert live["live"] is True and live["status"] == "running" and live["attempt"] == attempt
    assert [e["kind"] for e in live["entries"]] == ["assistant", "tool"] and live["tokens"]["prompt"] == 900
    assert dash.get(f"{url}?attempt={attempt}").json()["entries"] == live["entries"]
    assert dash.get(f"{url}?attempt={attempt + 1}").status_code == 404

    with session_scope(db) as s:
        task = s.get(Task, task_id)
        store_handoff(s, task, attempt, Handoff(task_id=task_id, status="failed", transcript=line("outcome")),
                      make_settings())
    done = dash.get(url).json()
    assert (done["live"], done["status"], [e["kind"] for e in done["entries"]]) == (False, "failed", ["outcome"])


def test_a_lost_attempts_steps_stay_readable(dash, sample, db):
    task_id, attempt = _running(dash)
    _step(db, task_id, attempt, line("assistant", step=1))
    with session_scope(db) as s:  # its worker was killed; the monitor put the task back
        s.get(Task, task_id).status = TaskStatus.pending
    lost = dash.get(f"/api/tasks/{task_id}/transcript").json()
    assert (lost["live"], lost["status"], len(lost["entries"])) == (True, "lost", 1)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_the_page_says_the_transcript_is_live(dash, sample, db, tmp_path):
    task_id, attempt = _running(dash)
    _step(db, task_id, attempt, line("assistant", step=1, content="live step <b>one</b>") + line("tool", name="run"))
    dom, log = _dump(f"{dash.base}/#task={task_id}", tmp_path)
    assert 'data-ready="1"' in re.search(r"<body[^>]*>", dom).group(0), log[-2000:]
    assert not [x for x in log.splitlines() if "CONSOLE" in x]
    meta = re.search(r'<span id="tr-meta"[^>]*>(.*?)</span>', dom).group(1)
    assert meta.startswith(f"live · attempt {attempt} · 2 of 2 entries"), meta
    assert "live step &lt;b&gt;one&lt;/b&gt;" in dom
