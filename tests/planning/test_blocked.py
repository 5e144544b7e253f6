"""Features blocked behind one that failed for good: the board's closure, the marks kept in Postgres, the events,
and a person's ways out (retry the task, add a task for the feature, start a new run)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from agentswarm.control.steering import add_task, add_task_request, retry_task, stop_run
from agentswarm.db.models import Event, Feature, FeatureStatus, Run, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.db.states import transition
from agentswarm.lifecycle.features import mark_features_done, mark_features_failed, sync_features
from agentswarm.planning.blocked import refresh_run
from agentswarm.planning.parsing import InvalidTask
from agentswarm.planning.state import Board
from tests.support.runs import start

# world-001 <- world-002 <- world-003 <- world-004: a chain, so blocking must be transitive.
CHAIN = [{"id": "world-003", "category": "world", "title": "Chunk lighting", "priority": 4,
          "dependencies": ["world-002"]},
         {"id": "world-004", "category": "world", "title": "Chunk streaming", "priority": 4,
          "dependencies": ["world-003", "core-001"]}]


def _feature(fid: str, deps: list[str] = (), status: str = "pending") -> Feature:
    return Feature(id=fid, category="c", title=fid, priority=5, status=FeatureStatus(status), dependencies=list(deps))


def test_the_board_blocks_transitively_past_cycles_but_not_through_work_in_flight():
    features = [_feature("r"), _feature("r2"), _feature("a", ["r"]), _feature("b", ["a"]), _feature("c", ["b", "x"]),
                _feature("x"), _feature("cyc1", ["cyc2"]), _feature("cyc2", ["cyc1", "r"]),
                _feature("f", ["r"]), _feature("g", ["f"]), _feature("d", ["r"], "done"), _feature("h", ["r", "r2"]),
                _feature("lone1", ["lone2"]), _feature("lone2", ["lone1"])]
    open_task = Task(id="t1", title="f", feature_ids=["f"], status=TaskStatus.running)
    board = Board({f.id: f for f in features}, [open_task], {"r": 2, "r2": 3, "x": 1}, set(), 2)
    assert board.failed_for_good("r") and board.failed_for_good("r2") and not board.failed_for_good("x")
    assert board.blocked() == {"a": ["r"], "b": ["r"], "c": ["r"], "cyc1": ["r"], "cyc2": ["r"], "h": ["r", "r2"]}
    assert {f.id for f in board.ready()} == {"x"}  # f is in flight, g waits for it, lone1/lone2 wait on each other
    board.failures_by_feature["r"] = 1  # one try left: nothing is blocked behind r any more
    assert board.blocked() == {"h": ["r2"]}


def _tasks_fail(url: str, run_id: str, fid: str, n: int, error: str = "tsc: 3 errors") -> list[str]:
    """n top-level tasks for the feature, each ending failed with its attempts used up."""
    ids = []
    with session_scope(url) as s:
        for _ in range(n):
            t = Task(run_id=run_id, title=f"Build {fid}", description="d", branch="pending", feature_ids=[fid],
                     max_attempts=1)
            s.add(t)
            s.flush()
            t.branch = f"swarm/{t.id}"
            for a, b in (("pending", "assigned"), ("assigned", "running"), ("running", "failed")):
                assert transition(s, t.id, a, b, attempts=1, error=error)
            mark_features_failed(s, [fid])
            ids.append(t.id)
    return ids


def _features(url: str) -> dict[str, Feature]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(Feature)))
        s.expunge_all()
    return {f.id: f for f in rows}


def _events(url: str, *kinds: str) -> list[Event]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(Event).where(Event.kind.in_(kinds)).order_by(Event.id)))
        s.expunge_all()
    return rows


@pytest.fixture
def chain(loaded):
    with session_scope(loaded) as s:
        sync_features(s, {"features": CHAIN})
    return loaded


def test_a_feature_failed_for_good_blocks_its_dependents_with_the_reason_and_one_needs_person_event(
        chain, make_settings, redis_client):
    s = make_settings(max_attempts=2)
    run_id = start(s)
    [first] = _tasks_fail(chain, run_id, "world-001", 1)
    with session_scope(chain) as sess:  # one failure: the planner tries again, nothing is blocked
        assert refresh_run(sess, run_id, s.max_attempts).blocked == {}
    [last] = _tasks_fail(chain, run_id, "world-001", 1, error="vitest: chunk.test.ts failed")
    with session_scope(chain) as sess:
        found = refresh_run(sess, run_id, s.max_attempts)
    assert found.newly_failed == ["world-001"] and found.newly_blocked == ["world-002", "world-003", "world-004"]
    f = _features(chain)
    assert f["world-001"].status == "failed" and f["world-001"].blocked_by is None
    assert f["world-001"].status_reason == (f"failed for good: 2 tasks ended without landing; the last, {last}, "
                                            "failed: vitest: chunk.test.ts failed")
    assert [(f[i].status, f[i].blocked_by) for i in ("world-002", "world-003", "world-004")] == [
        ("blocked", "world-001")] * 3
    assert f["world-002"].status_reason == "waits for world-001, which failed for good"
    assert f["world-003"].status_reason == "waits for world-002, blocked because world-001 failed for good"
    assert f["core-001"].status == "pending" and f["ui-001"].status == "pending"  # the rest is untouched
    [needs] = _events(chain, "feature.needs_person")
    assert needs.run_id == run_id and needs.task_id == last and needs.data["blocks"] == [
        "world-002", "world-003", "world-004"]
    assert "world-001 failed for good" in needs.message and f"`agentswarm retry {last}`" in needs.message
    [blocked] = _events(chain, "feature.blocked")
    assert blocked.message == "world-002, world-003, world-004 blocked: waiting on world-001, which failed for good"
    with session_scope(chain) as sess:  # a second refresh changes nothing and says nothing
        again = refresh_run(sess, run_id, s.max_attempts)
    assert again.newly_failed == again.newly_blocked == again.unblocked == [] and len(again.blocked) == 3
    assert len(_events(chain, "feature.needs_person", "feature.blocked", "feature.unblocked")) == 2
    assert first != last


def test_a_person_retrying_the_failed_task_unblocks_the_whole_chain_and_a_new_failure_blocks_it_again(
        chain, make_settings, redis_client):
    s = make_settings(max_attempts=1)
    run_id = start(s)
    [task_id] = _tasks_fail(chain, run_id, "world-001", 1)
    with session_scope(chain) as sess:
        refresh_run(sess, run_id, s.max_attempts)
        retry_task(sess, s, task_id)
    f = _features(chain)
    assert f["world-001"].status == "in_progress" and f["world-001"].status_reason is None
    assert [(f[i].status, f[i].blocked_by, f[i].status_reason) for i in ("world-002", "world-003", "world-004")] == [
        ("pending", None, None)] * 3
    [unblocked] = _events(chain, "feature.unblocked")
    assert unblocked.data["features"] == ["world-002", "world-003", "world-004"]
    with session_scope(chain) as sess:  # the retried attempt fails too: blocked again, a new needs-person event
        for a, b in (("pending", "assigned"), ("assigned", "running"), ("running", "failed")):
            transition(sess, task_id, a, b, attempts=2)
        mark_features_failed(sess, ["world-001"])
        assert refresh_run(sess, run_id, s.max_attempts).newly_blocked == ["world-002", "world-003", "world-004"]
    assert len(_events(chain, "feature.needs_person")) == 2


def test_a_task_a_person_adds_for_the_feature_unblocks_and_its_landing_frees_the_dependents(
        chain, make_settings, redis_client):
    s = make_settings(max_attempts=1)
    run_id = start(s)
    _tasks_fail(chain, run_id, "world-001", 1)
    with session_scope(chain) as sess:
        refresh_run(sess, run_id, s.max_attempts)
    with session_scope(chain) as sess:
        task, created = add_task_request(sess, s, {  # as `celery call agentswarm.add_task` and add-task --feature
            "description": "Finish chunk storage by hand", "scope": ["src/world/chunk.ts"], "features": ["world-001"]})
        task_id = task.id
    assert created and _features(chain)["world-002"].status == "pending"
    with session_scope(chain) as sess:
        assert sess.get(Task, task_id).feature_ids == ["world-001"]
        mark_features_done(sess, ["world-001"])  # it landed
        found = refresh_run(sess, run_id, s.max_attempts)
    assert found.blocked == {} and _features(chain)["world-001"].status == "done"
    with session_scope(chain) as sess:
        for bad, why in ((["ghost-1"], "unknown feature ghost-1"), (["world-001"], "already done"),
                         ("x" * 3, "unknown feature")):
            with pytest.raises(InvalidTask, match=why):
                add_task(sess, s, "again", features=bad)


def test_a_new_run_tries_the_failed_feature_again_so_its_dependents_are_unblocked(chain, make_settings, redis_client):
    s = make_settings(max_attempts=1)
    run_id = start(s)
    _tasks_fail(chain, run_id, "world-001", 1)
    with session_scope(chain) as sess:
        refresh_run(sess, run_id, s.max_attempts)
        stop_run(sess, run_id, "a person stops it")
    assert _features(chain)["world-004"].status == "blocked"  # the ended run's picture stays as it was
    second = start(s)
    with session_scope(chain) as sess:
        assert sess.get(Run, second).status == "active"
        found = refresh_run(sess, second, s.max_attempts)
    assert found.roots == {} and found.unblocked == ["world-002", "world-003", "world-004"]
    f = _features(chain)
    assert f["world-001"].status == "failed" and f["world-001"].status_reason is None  # ready again
