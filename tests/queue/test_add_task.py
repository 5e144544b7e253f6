"""The entry points called as a person would call them: add_task delivered twice makes one task, and every task's
arguments are bound to its signature before it runs (in-process `apply`, real Postgres and Redis)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from agentswarm import tasks
from agentswarm.db.models import Task
from agentswarm.db.session import session_scope
from agentswarm.errors import BadCall
from agentswarm.queue.app import app
from agentswarm.queue.names import ADD_TASK, QUEUE_OF


@pytest.fixture
def run_id(active_run):
    return active_run


def _ids(db) -> list[str]:
    with session_scope(db) as s:
        return list(s.scalars(select(Task.id)))


def test_add_task_is_routed_to_the_control_worker_and_keeps_its_result():
    assert QUEUE_OF[ADD_TASK] == "plan" and app.conf.task_routes[ADD_TASK] == {"queue": "plan"}
    t = app.tasks[ADD_TASK]
    assert not t.ignore_result and t.acks_late and t.reject_on_worker_lost


def test_a_message_delivered_twice_makes_one_task(run_id, db):
    request = {"description": "Fix the HUD", "scope": ["src/ui/hud.ts"], "kind": "fix", "priority": 2}
    first = tasks.add_task.apply(kwargs=request, task_id="msg-1").get()
    again = tasks.add_task.apply(kwargs=request, task_id="msg-1").get()  # a redelivery of the same message
    other = tasks.add_task.apply(kwargs=request, task_id="msg-2").get()  # a second call: a second task
    assert first == again != other and sorted(_ids(db)) == sorted({first, other})
    with session_scope(db) as s:
        assert s.get(Task, first).request_key == "celery:msg-1"


def test_a_given_key_wins_over_the_message_id(run_id, db):
    a = tasks.add_task.apply(kwargs={"description": "x", "key": "k1"}, task_id="m1").get()
    b = tasks.add_task.apply(kwargs={"description": "y", "key": "k1"}, task_id="m2").get()
    assert a == b and _ids(db) == [a]


@pytest.mark.parametrize(("name", "args", "kwargs", "words"), [
    (ADD_TASK, ["positional"], {}, "too many positional arguments"),
    ("agentswarm.tasks.run_task", [], {}, "missing a required argument: 'task_id'"),
    ("agentswarm.tasks.run_task", ["a", "b"], {}, "too many positional arguments"),
    ("agentswarm.tasks.merge_branch", [], {"task": "x"}, "missing a required argument: 'task_id'"),
    ("agentswarm.tasks.run_task", [["a"]], {}, "the task id must be a string, got list"),
    ("agentswarm.tasks.plan_tick", [1], {}, "too many positional arguments"),
    ("agentswarm.tasks.reconcile_tick", [], {"forse": True}, "unexpected keyword argument 'forse'"),
])
def test_wrong_argument_shapes_are_bad_calls(db, name, args, kwargs, words):
    result = app.tasks[name].apply(args=args, kwargs=kwargs)
    assert isinstance(result.result, BadCall) and words in str(result.result), result.result
    assert isinstance(result.result, app.tasks[name].throws)  # logged by Celery as expected: one line


def test_an_unknown_id_is_a_warning_and_an_event(run_id, db, caplog):
    from agentswarm.db.models import Event

    assert tasks.run_task.apply(args=["feedbeef0000"]).get() == "missing"
    assert tasks.merge_branch.apply(args=["x" * 200]).get() == "missing"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "work_on: 'feedbeef0000' names no task; nothing done" in warned
    with session_scope(db) as s:
        events = s.scalars(select(Event).where(Event.kind == "task.unknown_id").order_by(Event.id)).all()
    assert [e.run_id for e in events] == [run_id, run_id]
    assert events[1].message.startswith("merge_task: 'xxxx") and "is not a task id" in events[1].message
    assert len(events[1].message) < 200  # the id is clipped


def test_every_bad_field_is_named_at_once_and_in_the_feed(run_id, db):
    from agentswarm.db.models import Event
    from agentswarm.errors import BadRequest

    request = {"description": "fix it", "priority": 99, "kind": "feature", "scope": ["/etc/passwd"], "colour": "red"}
    result = tasks.add_task.apply(kwargs=request, task_id="bad-1")
    error = str(result.result)
    assert isinstance(result.result, BadRequest) and "\n" not in error
    for words in ("unknown argument colour", "priority must be an integer", "kind must be one of",
                  "'/etc/passwd' is absolute"):
        assert words in error, error
    assert _ids(db) == []
    with session_scope(db) as s:
        (event,) = s.scalars(select(Event).where(Event.kind == "task.rejected")).all()
    assert event.run_id == run_id and "priority must be" in event.message and "colour" in event.data["fields"]
