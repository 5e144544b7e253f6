"""Live pieces of a transcript in Postgres: which transcript a reader gets, and what storing a handoff does."""

from __future__ import annotations

import json

from sqlalchemy import select

from agentswarm.agent.contract import Handoff
from agentswarm.db.models import HandoffRecord, LiveStep, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.lifecycle.handoffs import finish_task, store_handoff
from agentswarm.lifecycle.progress import add_live_step, live_transcript, transcript_of
from tests.support.runs import start


def line(kind: str, **data: object) -> str:
    return json.dumps({"kind": kind, **data}) + "\n"


def _task(db, settings, attempts: int = 1) -> str:
    run_id = start(settings)
    with session_scope(db) as s:
        task = Task(run_id=run_id, description="d", branch="x", status=TaskStatus.running, attempts=attempts)
        s.add(task)
        s.flush()
        return task.id


def _pieces(db, task_id: str, attempt: int, *texts: str) -> None:
    with session_scope(db) as s:
        offset = 0
        for text in texts:
            offset += len(text.encode())
            add_live_step(s, task_id, attempt, offset=offset, lines=text, events=text.count("\n"), gate_calls=1)


def _live_rows(db, task_id: str) -> list[int]:
    with session_scope(db) as s:
        return list(s.scalars(select(LiveStep.attempt).where(LiveStep.task_id == task_id).order_by(LiveStep.id)))


def test_readers_get_the_handoff_else_the_live_pieces_of_the_attempt(db, make_settings) -> None:
    settings = make_settings()
    task_id = _task(db, settings, attempts=0)
    with session_scope(db) as s:
        assert transcript_of(s, task_id) == (None, "", False)  # never ran
        assert transcript_of(s, "no-such-task") == (None, "", False)
        s.get(Task, task_id).attempts = 1
    with session_scope(db) as s:
        assert transcript_of(s, task_id) == (1, "", True)  # running, no line read yet
    _pieces(db, task_id, 1, line("assistant", step=1), line("tool", name="run") + line("assistant", step=2))
    with session_scope(db) as s:
        text = live_transcript(s, task_id, 1)
        assert [json.loads(x)["kind"] for x in text.splitlines()] == ["assistant", "tool", "assistant"]
        assert transcript_of(s, task_id) == (1, text, True)
        assert transcript_of(s, task_id, 1) == (1, text, True)
        assert transcript_of(s, task_id, 2) == (2, "", True)
        s.add(HandoffRecord(task_id=task_id, attempt=1, status="failed", transcript=line("outcome")))
    with session_scope(db) as s:
        assert transcript_of(s, task_id, 1) == (1, line("outcome"), False)  # the handoff wins
        s.get(Task, task_id).attempts = 2  # attempt 2 taken, nothing read from it yet
    with session_scope(db) as s:
        assert transcript_of(s, task_id) == (1, line("outcome"), False)  # the latest handoff meanwhile
    _pieces(db, task_id, 2, line("assistant", step=1))
    with session_scope(db) as s:
        assert transcript_of(s, task_id) == (2, line("assistant", step=1), True)


def test_storing_a_handoff_drops_its_attempts_pieces_and_a_lost_attempt_keeps_its_own(db, make_settings,
                                                                                       redis_client) -> None:
    settings = make_settings()
    task_id = _task(db, settings, attempts=2)
    _pieces(db, task_id, 1, line("assistant", step=1, lost=True))  # attempt 1's worker was killed
    _pieces(db, task_id, 2, line("assistant", step=1), line("tool", name="run"))
    h = Handoff(task_id=task_id, status="blocked", summary="s", transcript=line("system") + line("outcome"))
    assert finish_task(task_id, 2, None, h, settings) == "blocked"
    assert _live_rows(db, task_id) == [1]
    with session_scope(db) as s:
        assert transcript_of(s, task_id) == (2, line("system") + line("outcome"), False)
        assert transcript_of(s, task_id, 1) == (1, line("assistant", step=1, lost=True), True)


def test_a_handoff_without_a_transcript_keeps_what_was_read_live(db, make_settings) -> None:
    settings = make_settings()
    task_id = _task(db, settings)
    _pieces(db, task_id, 1, line("assistant", step=1), line("tool", name="run", result="slow"))
    timed_out = Handoff(task_id=task_id, status="failed", error="timed out after 6s; sandbox stopped")
    with session_scope(db) as s:
        assert store_handoff(s, s.get(Task, task_id), 1, timed_out, settings) is True
        assert store_handoff(s, s.get(Task, task_id), 1, timed_out, settings) is False  # once per attempt
    assert _live_rows(db, task_id) == []
    with session_scope(db) as s:
        stored = s.scalars(select(HandoffRecord.transcript).where(HandoffRecord.task_id == task_id)).one()
    assert [json.loads(x)["kind"] for x in stored.splitlines()] == ["assistant", "tool"]
