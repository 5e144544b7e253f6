"""The subplanner: children inside the parent's scope, hard caps against a model that always splits, settling."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from agentswarm.db.models import Event, LLMCall, Task
from agentswarm.db.session import session_scope
from agentswarm.db.states import transition
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.lifecycle.parents import settle_parent
from agentswarm.llm.factory import client_from_settings
from agentswarm.planning.subplanner import maybe_decompose, too_large
from tests.support import replies
from tests.support.runs import start, work_queue_len

SCOPE = [f"src/world/m{i}.ts" for i in range(8)]


def _root(url: str, run_id: str, scope=SCOPE, kind="feature") -> str:
    with session_scope(url) as s:
        t = Task(run_id=run_id, title="Big world task", description="lots", scope=list(scope), branch="x",
                 kind=kind, feature_ids=["world-001"], priority=4, status="running")
        s.add(t)
        s.flush()
        return t.id


def _run(url: str, task_id: str) -> None:
    with session_scope(url) as s:
        transition(s, task_id, "pending", "assigned")
        transition(s, task_id, "assigned", "running")


def _greedy(body: dict) -> str:
    """An adversarial model: always splits, into more children than asked, each claiming the whole scope."""
    content = body["messages"][1]["content"]
    parent = json.loads(content[content.index("<task>") + 6:content.index("</task>")])
    return json.dumps([{"title": f"{parent['title']}/{i}", "description": "again", "scope": parent["scope"],
                        "acceptance": [], "priority": 2, "feature_ids": ["ui-002"], "kind": "fix"}
                       for i in range(20)])


@pytest.mark.parametrize(("max_tasks", "expected"), [
    (1000, 1 + 3 + 9),  # only depth and breadth bind
    (11, 1 + 3 + 3 + 3),  # depth 2 gets 3 + 3, then 1 task is left in the run: a split needs at least 2
])
def test_a_model_that_always_splits_stays_within_depth_children_and_run_caps(
        loaded, make_settings, redis_client, max_tasks, expected):
    with FakeLLMServer(script=_greedy) as fake:
        s = make_settings(llm_base_url=fake.url, subplanner_max_depth=2, subplanner_max_children=3,
                          run_max_tasks=max_tasks)
        run_id = start(s)
        root = _root(loaded, run_id)
        frontier, made = [root], 0
        client = client_from_settings(s)
        while frontier:  # play the workers: each task, when it starts, asks the subplanner first
            tid = frontier.pop(0)
            with session_scope(loaded) as sess:
                children = maybe_decompose(sess, sess.get(Task, tid), client, settings=s) or []
                made += len(children)
                ids = [c.id for c in children]
            for cid in ids:
                _run(loaded, cid)
            frontier += ids
        client.close()
    with session_scope(loaded) as sess:
        tasks = list(sess.scalars(select(Task).where(Task.run_id == run_id)))
        per_parent = dict(sess.execute(select(Task.parent_id, func.count()).where(Task.parent_id.is_not(None))
                                       .group_by(Task.parent_id)).all())
        calls = sess.scalar(select(func.count()).select_from(LLMCall).where(LLMCall.role == "subplanner"))
    assert max(t.depth for t in tasks) <= 2
    assert max(per_parent.values()) <= 3
    assert len(tasks) <= max_tasks and made == len(tasks) - 1
    assert len(tasks) == expected
    children = [t for t in tasks if t.parent_id]
    assert all(t.kind == "feature" and t.feature_ids == ["world-001"] for t in children)  # inherited
    assert all(set(t.scope) <= set(SCOPE) for t in children)
    assert all(t.branch == f"swarm/{t.id}" for t in children)
    assert calls == len(fake.requests) == len(per_parent)  # every subplanner call recorded


def test_children_escaping_the_parent_scope_are_dropped(loaded, make_settings, redis_client):
    reply = json.dumps([
        {"title": "inside a", "description": "d", "scope": ["src/world/m0.ts", "src/world/m1.ts"]},
        {"title": "escapes", "description": "d", "scope": ["src/world/m2.ts", "src/main.ts"]},
        {"title": "dotdot", "description": "d", "scope": ["src/world/../../etc/passwd"]},
        {"title": "inside b", "description": "d", "scope": ["src/world/m3.ts"]},
    ])
    with FakeLLMServer(script=[reply]) as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        root = _root(loaded, run_id, scope=SCOPE[:4])
        with session_scope(loaded) as sess:
            children = maybe_decompose(sess, sess.get(Task, root), client_from_settings(s), settings=s)
            got = sorted(c.title for c in children)
    assert got == ["inside a", "inside b"]
    assert work_queue_len(redis_client) == 2  # children sent after commit: the parent holds no scope
    with session_scope(loaded) as sess:
        reasons = [e.message for e in sess.scalars(select(Event).where(Event.kind == "subplanner.rejected"))]
        assert sess.get(Task, root).status == "running"
    assert any("escapes the parent's: src/main.ts" in r for r in reasons)
    assert any("leaves the repository" in r for r in reasons)


def test_small_tasks_and_conflict_tasks_run_whole_without_a_model_call(loaded, make_settings):
    with FakeLLMServer(script=[]) as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        small = _root(loaded, run_id, scope=SCOPE[:3])
        conflict = _root(loaded, run_id, kind="conflict")
        with session_scope(loaded) as sess:
            for tid in (small, conflict):
                assert maybe_decompose(sess, sess.get(Task, tid), client_from_settings(s), settings=s) is None
    assert fake.requests == []
    with session_scope(loaded) as sess:
        t = sess.get(Task, small)
        t.description = "x" * 5000
        assert too_large(t, s)  # a long description counts too
        t.depth = s.subplanner_max_depth
        assert not too_large(t, s)


def test_a_second_delivery_returns_the_same_children(loaded, make_settings):
    reply = json.dumps([{"title": "a", "description": "d", "scope": SCOPE[:4]},
                        {"title": "b", "description": "d", "scope": SCOPE[4:]}])
    with FakeLLMServer(script=[reply]) as fake:  # a second model call would exhaust the script
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        root = _root(loaded, run_id)
        client = client_from_settings(s)
        with session_scope(loaded) as sess:
            first = [c.id for c in maybe_decompose(sess, sess.get(Task, root), client, settings=s)]
        with session_scope(loaded) as sess:
            second = [c.id for c in maybe_decompose(sess, sess.get(Task, root), client, settings=s)]
    assert first == second and len(first) == 2 and len(fake.requests) == 1


def test_llm_failure_runs_the_task_whole_and_is_recorded(loaded, make_settings):
    from agentswarm.demo.faults import Fault

    with FakeLLMServer(script=[], faults=[Fault.server_error(500)]) as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        root = _root(loaded, run_id)
        with session_scope(loaded) as sess:
            assert maybe_decompose(sess, sess.get(Task, root), client_from_settings(s), settings=s) is None
    with session_scope(loaded) as sess:
        call = sess.scalar(select(LLMCall))
        assert (call.role, call.ok, call.task_id) == ("subplanner", False, root)
        assert sess.scalar(select(Event).where(Event.kind == "subplanner.llm_error")) is not None


def _children(url, run_id, parent_id, n):
    with session_scope(url) as s:
        ids = []
        for i in range(n):
            t = Task(run_id=run_id, parent_id=parent_id, title=f"c{i}", description="d", scope=[SCOPE[i]],
                     branch=f"b{i}", status="running", feature_ids=["world-001"])
            s.add(t)
            s.flush()
            ids.append(t.id)
        return ids


def _end(url, task_id, status, error=None):
    with session_scope(url) as s:
        transition(s, task_id, "running", status, error=error)
        return settle_parent(s, s.get(Task, task_id).parent_id)


def test_the_parent_ends_when_its_children_end(loaded, make_settings):
    s = make_settings()
    run_id = start(s)
    parent = _root(loaded, run_id)
    a, b, c = _children(loaded, run_id, parent, 3)
    assert _end(loaded, a, "complete") is None
    assert _end(loaded, b, "complete") is None
    assert _end(loaded, c, "complete") == "complete"
    with session_scope(loaded) as sess:
        assert sess.get(Task, parent).status == "complete"
        assert settle_parent(sess, parent) is None  # idempotent


def test_a_failed_child_fails_the_parent_with_a_summary_and_settles_upwards(loaded, make_settings):
    s = make_settings()
    run_id = start(s)
    grand = _root(loaded, run_id)
    [parent, sibling] = _children(loaded, run_id, grand, 2)
    a, b = _children(loaded, run_id, parent, 2)
    _end(loaded, a, "complete")
    assert _end(loaded, b, "failed", error="tsc: 3 errors") == "failed"
    with session_scope(loaded) as sess:
        p = sess.get(Task, parent)
        assert p.status == "failed" and "1 complete, 1 failed" in p.summary and "tsc: 3 errors" in p.summary
        assert sess.get(Task, grand).status == "running"  # the sibling is still running
    _end(loaded, sibling, "blocked", error="needs a person")
    with session_scope(loaded) as sess:
        g = sess.get(Task, grand)
        assert g.status == "failed" and "1 blocked, 1 failed" in g.summary


def test_blocked_children_block_the_parent(loaded, make_settings):
    s = make_settings()
    run_id = start(s)
    parent = _root(loaded, run_id)
    a, b = _children(loaded, run_id, parent, 2)
    _end(loaded, a, "complete")
    assert _end(loaded, b, "blocked", error="missing API") == "blocked"


# -- replies as real servers send them (issue 17) ---------------------------------------------------

KIDS = [{"title": f"Part {i}", "description": f"Write m{2 * i} and m{2 * i + 1}.", "scope": SCOPE[2 * i:2 * i + 2],
         "acceptance": ["tests pass"], "priority": 3} for i in range(4)]


def _split(loaded, make_settings, script) -> tuple[list[Task], list[str], FakeLLMServer]:
    with FakeLLMServer(script=script) as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        root = _root(loaded, run_id)
        with session_scope(loaded) as sess:
            children = maybe_decompose(sess, sess.get(Task, root), client_from_settings(s), settings=s) or []
            ids = [c.id for c in children]
    with session_scope(loaded) as sess:
        kids = [sess.get(Task, i) for i in ids]
        kinds = [e.kind for e in sess.scalars(select(Event).order_by(Event.id))]
        sess.expunge_all()
    return kids, kinds, fake


def test_a_cut_split_is_asked_again_for_fewer_children(loaded, make_settings, redis_client):
    kids, kinds, fake = _split(loaded, make_settings, [replies.cut_inside(KIDS, 1), json.dumps(KIDS[:2])])
    assert [k.title for k in kids] == ["Part 0", "Part 1"] and len(fake.requests) == 2
    assert "at most 2 children" in fake.requests[1]["messages"][-1]["content"]  # half of the 5 it may make
    assert "subplanner.reply_cut" in kinds


def test_a_cut_split_with_enough_children_keeps_them(loaded, make_settings, redis_client):
    kids, kinds, fake = _split(loaded, make_settings, [replies.cut_inside(KIDS, 3)])
    assert [k.title for k in kids] == ["Part 0", "Part 1", "Part 2"] and len(fake.requests) == 1
    assert "subplanner.reply_cut" in kinds and "subplanner.rejected" in kinds


def test_trailing_commas_keep_every_child(loaded, make_settings, redis_client):
    kids, _, _ = _split(loaded, make_settings, [replies.trailing_commas(KIDS)])
    assert [k.title for k in kids] == [f"Part {i}" for i in range(4)]


def test_a_split_beyond_repair_runs_the_task_whole(loaded, make_settings, redis_client):
    kids, kinds, _ = _split(loaded, make_settings, [replies.unrepairable(KIDS)])
    assert kids == [] and "subplanner.unparseable" in kinds


def test_the_same_child_twice_is_one_child(loaded, make_settings, redis_client):
    kids, kinds, _ = _split(loaded, make_settings, [json.dumps([KIDS[0], KIDS[1], KIDS[0]])])
    assert [k.title for k in kids] == ["Part 0", "Part 1"] and "subplanner.rejected" in kinds


def test_children_without_titles_get_them_from_their_descriptions(loaded, make_settings, redis_client):
    kids, _, _ = _split(loaded, make_settings, [replies.without_titles(KIDS[:2])])
    assert [k.title for k in kids] == ["Write m0 and m1", "Write m2 and m3"]


def test_a_split_without_usage_is_counted_from_characters(loaded, make_settings, redis_client):
    kids, kinds, _ = _split(loaded, make_settings, [replies.no_usage(KIDS[:2])])
    with session_scope(loaded) as sess:
        call = sess.scalar(select(LLMCall).where(LLMCall.role == "subplanner"))
        assert call.prompt_tokens > 300 and call.completion_tokens > 50
    assert len(kids) == 2 and "llm.usage_estimated" in kinds
