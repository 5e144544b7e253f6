"""The root planner over HTTP against the fake LLM, storing in the real Postgres and sending on the real Redis."""

from __future__ import annotations

import json
import threading
import time

from sqlalchemy import select

from agentswarm.db.models import Event, LLMCall, Run, Task
from agentswarm.db.session import session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.faults import Fault
from agentswarm.planning.planner import plan_tick
from tests.support.runs import start, work_queue_len


def task(fid: str | None, scope: list[str], title: str | None = None, priority: int = 3) -> dict:
    return {"title": title or f"Build {fid or scope[0]}", "description": "do it well", "scope": scope,
            "acceptance": ["`npx tsc --noEmit` passes"], "priority": priority,
            "feature_ids": [fid] if fid else [], "kind": "feature"}


def tasks_of(url: str, run_id: str) -> list[Task]:
    with session_scope(url) as s:
        return list(s.scalars(select(Task).where(Task.run_id == run_id).order_by(Task.created_at)))


def events_of(url: str, kind: str) -> list[Event]:
    with session_scope(url) as s:
        return list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def test_planned_tasks_are_stored_and_sent_on_work_after_commit(loaded, make_settings, redis_client, hub):
    from agentswarm.git.hub import main_sha

    with FakeLLMServer() as fake:  # the built-in simulator plays the root planner
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        assert work_queue_len(redis_client) == 0
        report = plan_tick(s)
    stored = tasks_of(loaded, run_id)
    # world-002 waits for world-001: four features are ready, four tasks.
    assert sorted(f for t in stored for f in t.feature_ids) == ["core-001", "ui-001", "ui-002", "world-001"]
    assert report["runs"][run_id]["planned"] == 4
    assert work_queue_len(redis_client) == 4
    for t in stored:
        assert t.status == "pending" and t.enqueued_at is not None
        assert t.branch == f"swarm/{t.id}" and t.base_sha == main_sha(hub) and t.max_attempts == s.max_attempts
        assert t.kind == "feature" and t.depth == 0
    from agentswarm.db.models import Feature

    with session_scope(loaded) as sess:
        status = dict(sess.execute(select(Feature.id, Feature.status)).all())
    assert status == {"core-001": "in_progress", "world-001": "in_progress", "ui-001": "in_progress",
                      "ui-002": "in_progress", "world-002": "pending"}
    prompt = fake.requests[0]["messages"][1]["content"]
    assert "src/engine/loop.ts" in prompt and "Initial import" in prompt  # main's tree and log were read


def test_a_rolled_back_plan_sends_nothing(loaded, make_settings, redis_client):
    from agentswarm.lifecycle.dispatch import dispatch_pending
    from agentswarm.planning.parsing import validate_task
    from agentswarm.planning.store import store_task

    s = make_settings()
    run_id = start(s)
    try:
        with session_scope(loaded) as sess:
            store_task(sess, validate_task(task("ui-001", ["src/ui/hud.ts"]), {"ui-001"}), run_id=run_id,
                       base_sha=None, settings=s)
            assert dispatch_pending(sess, run_id)
            assert work_queue_len(redis_client) == 0  # not before commit
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert work_queue_len(redis_client) == 0 and tasks_of(loaded, run_id) == []


BAD_REPLIES = [
    "I'm sorry, I can't help with that.",
    "[{\"title\": \"unterminated\"",
    json.dumps({"tasks": "none"}),
    json.dumps([1, "two", None, []]),
    json.dumps([task("ghost-999", ["src/x.ts"]), task("ui-001", ["../../etc/passwd"]),
                task("ui-001", ["/abs/path.ts"]), task("ui-001", [".git/HEAD"]),
                {**task("ui-001", ["src/ui/hud.ts"]), "priority": 99},
                {**task("ui-001", ["src/ui/hud.ts"]), "scope": "src/ui/hud.ts"},
                {"title": "no description", "scope": ["a.ts"]}]),
    json.dumps([task("ui-001", [f"src/f{i}.ts"], title=f"spam {i}") for i in range(3000)]),
]


def test_a_corpus_of_bad_replies_loses_no_valid_task_and_crashes_nothing(loaded, make_settings, redis_client):
    valid = {"core-001": task("core-001", ["src/math/vec3.ts"]), "world-001": task("world-001", ["src/world/chunk.ts"])}
    mixed = ("Here you go:\n```json\n" + json.dumps(
        [task("ghost", ["src/g.ts"]), valid["core-001"], {"scope": ["../x"]}, valid["world-001"],
         task("world-002", ["src/world/mesher.ts"])]) + "\n```\nThat's all.")
    script = [*BAD_REPLIES, mixed]
    with FakeLLMServer(script=script) as fake:
        s = make_settings(llm_base_url=fake.url, max_workers=50, planner_batch_size=5)
        run_id = start(s)
        reports = [plan_tick(s) for _ in script]
    stored = tasks_of(loaded, run_id)
    # The 3000-task spam array: cut at the batch size, then one task per feature survives.
    spam = [t for t in stored if t.title.startswith("spam")]
    assert len(spam) == 1
    by_feature = {t.feature_ids[0]: t for t in stored}
    assert set(by_feature) == {"ui-001", "core-001", "world-001"}  # world-002 waits for world-001
    assert by_feature["core-001"].scope == ["src/math/vec3.ts"]
    assert all(".." not in p and not p.startswith(("/", ".git")) for t in stored for p in t.scope)
    assert all("error" not in r["runs"][run_id] or r["runs"][run_id]["error"] == "unparseable" for r in reports)
    assert len(events_of(loaded, "planner.unparseable")) == 3
    reasons = " | ".join(e.message for e in events_of(loaded, "planner.rejected"))
    for fragment in ("unknown feature", "leaves the repository", "absolute", ".git", "outside 1..10",
                     "description", "waits for world-001", "over the limit", "JSON object"):
        assert fragment in reasons, fragment
    with session_scope(loaded) as sess:
        run = sess.get(Run, run_id)
        assert run.planner_iterations == len(script) and run.status == "active"
        assert sess.scalar(select(LLMCall.id).where(LLMCall.ok.is_(False))) is None
    assert work_queue_len(redis_client) == len(stored)


def test_llm_errors_are_recorded_and_the_next_tick_retries(loaded, make_settings, redis_client):
    with FakeLLMServer(faults=[Fault.server_error(503)]) as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        first = plan_tick(s)
        assert first["runs"][run_id]["error"] == "llm"
        assert tasks_of(loaded, run_id) == []
        second = plan_tick(s)
    assert second["runs"][run_id]["planned"] == 4
    [err] = events_of(loaded, "planner.llm_error")
    assert "503" in err.message
    with session_scope(loaded) as sess:
        calls = list(sess.scalars(select(LLMCall).order_by(LLMCall.id)))
    assert [(c.role, c.ok) for c in calls] == [("planner", False), ("planner", True)]
    assert calls[0].error and calls[0].run_id == run_id


def test_in_flight_duplicates_are_dropped_and_done_dependencies_unlock(loaded, make_settings, redis_client):
    from agentswarm.db.states import transition
    from agentswarm.lifecycle.features import mark_features_done

    first = [task("world-001", ["src/world/chunk.ts"], title="Add chunk storage")]
    second = [task("world-001", ["src/world/chunk2.ts"], title="Chunk storage again"),
              {**task(None, ["src/world/chunk.ts"]), "title": "add  CHUNK storage"},
              task("world-002", ["src/world/mesher.ts"])]
    third = [task("world-002", ["src/world/mesher.ts"], title="Greedy mesher")]
    with FakeLLMServer(script=[json.dumps(first), json.dumps(second), json.dumps(third)]) as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        plan_tick(s)
        [t1] = tasks_of(loaded, run_id)
        plan_tick(s)
        assert [t.id for t in tasks_of(loaded, run_id)] == [t1.id]
        with session_scope(loaded) as sess:  # the task lands: its feature is done, its dependant is ready
            for a, b in (("pending", "assigned"), ("assigned", "running"), ("running", "complete")):
                transition(sess, t1.id, a, b)
            mark_features_done(sess, ["world-001"])
        plan_tick(s)
    titles = [t.title for t in tasks_of(loaded, run_id)]
    assert titles == ["Add chunk storage", "Greedy mesher"]
    reasons = [e.message for e in events_of(loaded, "planner.rejected")]
    assert any("already has a task in flight" in r for r in reasons)
    assert any("duplicate of open task" in r for r in reasons)
    assert any("waits for world-001" in r for r in reasons)


def test_two_planners_racing_never_duplicate_a_feature(loaded, make_settings, redis_client):
    from agentswarm.planning import planner
    from agentswarm.planning.calls import CallOutcome

    reply = json.dumps([task("core-001", ["src/math/vec3.ts"]), task("ui-001", ["src/ui/hud.ts"])])
    results: list[dict] = []

    def slow_model(body: dict) -> str:  # answers only once the other ticks have come and gone
        deadline = time.monotonic() + 10
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        return reply

    with FakeLLMServer(script=slow_model) as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        threads = [threading.Thread(target=lambda: results.append(plan_tick(s))) for _ in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert len(fake.requests) == 1  # only the tick holding the planner lock asked the model
    # Even two planners that both got an answer (the lock bypassed) store each feature once.
    job = planner.PlanJob(run_id, 5, None, [])
    outcome = CallOutcome(reply, "m", 10, 10, 5)
    again = planner._finish(job, outcome, s)
    assert again["planned"] == 0 and again["rejected"] == 2
    feats = [f for t in tasks_of(loaded, run_id) for f in t.feature_ids]
    assert sorted(feats) == ["core-001", "ui-001"]


def test_no_room_means_no_llm_call(loaded, make_settings, redis_client):
    with FakeLLMServer() as fake:
        s = make_settings(llm_base_url=fake.url, max_workers=2, planner_batch_size=5, planner_backlog=0)
        run_id = start(s)
        plan_tick(s)
        assert len(tasks_of(loaded, run_id)) == 2  # room = max_workers (+ no backlog) - open tasks
        report = plan_tick(s)
    assert report["runs"][run_id]["skipped"] == "no room"
    assert len(fake.requests) == 1


def test_a_second_beat_does_nothing_while_the_first_holds_the_lock(loaded, make_settings, monkeypatch):
    from agentswarm.db.locks import try_xact_lock
    from agentswarm.planning import planner

    monkeypatch.setattr(planner, "PLAN_LOCK_WAIT_S", 0.3)
    s = make_settings()
    start(s)
    with session_scope(loaded) as other:
        assert try_xact_lock(other, "plan")
        assert plan_tick(s) == {"skipped": "another plan tick holds the lock"}
        with planner.planner_lock(s) as mine:  # a tick that is mid-call holds the planner lock too
            assert mine
            assert plan_tick(s) == {"skipped": "another plan tick holds the lock"}


def test_a_missing_endpoint_is_an_event_not_a_crash(loaded, make_settings):
    s = make_settings(llm_base_url="")
    run_id = start(s)
    report = plan_tick(s)
    assert report["runs"][run_id]["error"] == "ValueError"
    [ev] = events_of(loaded, "planner.error")
    assert "base URL" in ev.message
