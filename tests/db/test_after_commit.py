"""After-commit callbacks: run once the outermost transaction has committed and ended, each on its own."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from agentswarm.db import Event, after_commit, session_scope
from agentswarm.db.models import Run


def _run(db, name: str = "r") -> Run:
    return Run(id=f"run-{name}", max_tasks=1, max_tokens=1, max_dollars=1.0)


def test_callbacks_run_after_the_commit_in_order_outside_any_transaction(db):
    seen: list[tuple[str, bool, int]] = []

    def note(tag: str):
        def fn() -> None:
            with session_scope(db) as other:  # a worker receiving the message sees the row
                seen.append((tag, s.in_transaction(), len(other.scalars(select(Run)).all())))
        return fn

    with session_scope(db) as s:
        s.add(_run(db))
        after_commit(s, note("first"))
        after_commit(s, note("second"))
        s.flush()
        assert seen == []
    assert seen == [("first", False, 1), ("second", False, 1)]


def test_a_rollback_drops_them_and_a_savepoint_is_not_the_commit(db):
    seen: list[str] = []
    with pytest.raises(RuntimeError), session_scope(db) as s:
        after_commit(s, lambda: seen.append("rolled back"))
        raise RuntimeError("the unit of work failed")
    with session_scope(db) as s:
        with s.begin_nested():
            after_commit(s, lambda: seen.append("after the outer commit"))
        assert seen == []  # the savepoint was released, the transaction is still open
        s.add(_run(db))
    assert seen == ["after the outer commit"]


def test_a_commit_inside_the_unit_of_work_sends_what_came_before_it(db):
    seen: list[str] = []
    with session_scope(db) as s:
        after_commit(s, lambda: seen.append("one"))
        s.commit()
        assert seen == ["one"]
        after_commit(s, lambda: seen.append("two"))
    assert seen == ["one", "two"]


def test_a_failing_callback_is_logged_with_its_own_error_and_the_others_still_run(db, caplog):
    seen: list[str] = []

    def broker_down() -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    caplog.set_level(logging.INFO)
    with session_scope(db) as s:  # the scope neither raises nor tries to roll back the committed session
        s.add(_run(db))
        after_commit(s, lambda: seen.append("before"))
        after_commit(s, broker_down, what="merge_branch", task_id="t-1")
        after_commit(s, lambda: seen.append("after"))
        after_commit(s, broker_down, what="agentswarm.tasks.reconcile_tick")
    assert seen == ["before", "after"]
    with session_scope(db) as s:
        assert s.get(Run, "run-r") is not None  # the commit stands
        failed, tick = s.scalars(select(Event).where(Event.kind == "message.send_failed").order_by(Event.id)).all()
    assert "the beat's next tick covers it" in tick.message and tick.task_id is None
    assert failed.task_id == "t-1" and failed.data["what"] == "merge_branch"
    assert "ConnectionError: Error 111 connecting to 127.0.0.1:1" in failed.message
    assert "recovery sends it again" in failed.message
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [failed.message, tick.message]
    assert "committed' state" not in caplog.text and "InvalidRequestError" not in caplog.text
