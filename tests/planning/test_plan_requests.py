"""Event-driven planning: plan requests sent after a landing or a task's end, coalesced, never lost; the backlog.

Real Postgres, Redis, git hub and fake LLM over HTTP; the overlap test runs a real control worker on `plan`.
"""

from __future__ import annotations

import base64
import json
import threading
import time

from sqlalchemy import select

from agentswarm.agent.contract import Handoff
from agentswarm.db.models import Feature, HandoffRecord, Task
from agentswarm.db.session import session_scope
from agentswarm.db.states import transition
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.git.hub import main_sha
from agentswarm.lifecycle.features import mark_features_in_progress
from agentswarm.lifecycle.handoffs import finish_task
from agentswarm.planning.planner import plan_tick
from agentswarm.queue.broker import queue_keys
from agentswarm.queue.names import PLAN_TICK
from agentswarm.queue.plan_requests import planner_busy, request_plan
from tests.git.hubkit import commit, set_ref
from tests.planning.test_planner import task, tasks_of
from tests.support.runs import start, work_queue_len
from tests.support.waiting import wait_for


def plan_messages(redis_client) -> list[dict]:
    """The messages waiting on the `plan` queue: task name, kwargs, expiry."""
    out = []
    for key in queue_keys("plan"):
        for raw in redis_client.lrange(key, 0, -1):
            msg = json.loads(raw)
            args, kwargs, _ = json.loads(base64.b64decode(msg["body"]))
            out.append({"task": msg["headers"]["task"], "kwargs": kwargs, "expires": msg["headers"]["expires"]})
    return out


def _complete_with_branch(s, run_id: str, feature: str, path: str) -> str:
    """A task for `feature` that ran and handed off one commit on its branch in the hub: ready to land."""
    head = commit(s.hub_path, main_sha(s.hub_path), {path: f"// {feature}\n"}, message=f"Build {feature}")
    with session_scope(s.database_url) as db:
        t = Task(run_id=run_id, title=f"Build {feature}", description="d", scope=[path], feature_ids=[feature],
                 branch="x", status="running", attempts=1, context={"planned_by": "planner"})
        db.add(t)
        db.flush()
        t.branch = f"swarm/{t.id}"
        db.add(HandoffRecord(task_id=t.id, attempt=1, status="complete", commits=[head], head_sha=head))
        assert transition(db, t.id, "running", "complete")
        mark_features_in_progress(db, [feature])
        tid = t.id
    set_ref(s.hub_path, f"swarm/{tid}", head)
    return tid


def test_a_landing_that_unblocks_a_feature_sends_one_plan_request(loaded, make_settings, redis_client):
    from agentswarm.merge.queue import merge_task

    with FakeLLMServer() as fake:  # the simulator plans whatever the prompt lists as ready
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        chunk = _complete_with_branch(s, run_id, "world-001", "src/world/chunk.ts")
        vec = _complete_with_branch(s, run_id, "core-001", "src/math/vec3.ts")
        assert plan_messages(redis_client) == []
        assert merge_task(chunk, s) == "merged"  # world-002 waited for world-001: ready now
        with session_scope(loaded) as db:
            assert db.get(Feature, "world-001").status == "done"
        [msg] = plan_messages(redis_client)
        assert msg["task"] == PLAN_TICK and msg["kwargs"] == {"requested": True} and msg["expires"]
        assert merge_task(vec, s) == "merged"  # a second landing before the tick starts: the same request
        assert len(plan_messages(redis_client)) == 1
        report = plan_tick(s, requested=True)  # the requested tick, as the control worker runs it
        planned = sorted(f for t in tasks_of(loaded, run_id) if t.status == "pending" for f in t.feature_ids)
        assert report["runs"][run_id]["planned"] == 3 and planned == ["ui-001", "ui-002", "world-002"]
        assert request_plan(s)  # the tick freed the marker as it started: the next event sends anew
        assert len(plan_messages(redis_client)) == 2
    assert len(fake.requests) == 1


def test_a_request_during_a_model_call_makes_one_follow_up_and_a_busy_beat_is_deferred(
        loaded, make_settings, redis_client):
    in_call, answer = threading.Event(), threading.Event()

    def slow(body: dict) -> str:
        in_call.set()
        answer.wait(20)
        return json.dumps([task("core-001", ["src/math/vec3.ts"])])

    with FakeLLMServer(script=slow) as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        holder = threading.Thread(target=plan_tick, args=(s,))
        holder.start()
        assert in_call.wait(20)
        assert planner_busy(s.database_url)
        assert [request_plan(s) for _ in range(10)] == [False] * 10  # nothing sent while the call is in flight
        beat = plan_tick(s)  # a beat meanwhile: no model call, but a pass is owed
        assert beat["runs"][run_id]["skipped"] == "another planner is running"
        assert plan_messages(redis_client) == []
        answer.set()
        holder.join(20)
    assert [m["kwargs"] for m in plan_messages(redis_client)] == [{"requested": True}]  # exactly one follow-up
    assert len(fake.requests) == 1 and not planner_busy(s.database_url)


def test_overlapping_requests_make_one_model_call_and_one_follow_up(loaded, make_settings, redis_client, hub,
                                                                     celery_worker):
    calls: list[tuple[float, float]] = []
    replies = [[task("core-001", ["src/math/vec3.ts"])], [task("world-001", ["src/world/chunk.ts"])]]

    def slow(body: dict) -> str:  # a 1.5 s model call
        began = time.monotonic()
        time.sleep(1.5)
        calls.append((began, time.monotonic()))
        return json.dumps(replies[len(calls) - 1] if len(calls) <= len(replies) else [])

    with FakeLLMServer(script=slow) as fake:
        env = {"LLM_BASE_URL": fake.url, "HUB_PATH": str(hub), "MAX_WORKERS": "10", "PLANNER_BATCH_SIZE": "5",
               "LLM_MAX_RETRIES": "0", "PLAN_INTERVAL_S": "60"}
        celery_worker(queues="plan", pool="prefork", concurrency=2, env=env)  # as the control worker runs
        s = make_settings(llm_base_url=fake.url, plan_interval_s=60)
        run_id = start(s)
        go = threading.Barrier(20)
        sent: list[bool] = []

        def burst() -> None:
            go.wait()
            sent.append(request_plan(s))

        threads = [threading.Thread(target=burst) for _ in range(20)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert 1 <= sum(sent) <= 2, sent  # coalesced (a second only if the tick started amid the burst)
        wait_for(lambda: len(fake.requests) == 1, timeout=60, every=0.02)
        during = [request_plan(s) for _ in range(20)]  # all while the first call is in flight
        assert not any(during)
        wait_for(lambda: len(tasks_of(loaded, run_id)) == 2, timeout=60, every=0.1)
        time.sleep(3.0)  # time for any further pass to show
        assert len(fake.requests) == 2, [c for c in calls]
    (_, first_end), (second_start, _) = calls
    assert second_start >= first_end  # the follow-up came after the call it overlapped
    assert sorted(f for t in tasks_of(loaded, run_id) for f in t.feature_ids) == ["core-001", "world-001"]
    assert plan_messages(redis_client) == [] and not planner_busy(s.database_url)


def _take(url: str, task_id: str) -> None:
    with session_scope(url) as db:
        assert transition(db, task_id, "pending", "assigned", attempts=1)
        assert transition(db, task_id, "assigned", "running")


def test_the_backlog_waits_unsent_and_goes_the_moment_a_slot_frees(loaded, make_settings, redis_client):
    with FakeLLMServer() as fake:
        s = make_settings(llm_base_url=fake.url, max_workers=2, planner_backlog=2)
        run_id = start(s)
        report = plan_tick(s)
        assert report["runs"][run_id]["planned"] == 4  # 2 free slots + a backlog of 2
        stored = tasks_of(loaded, run_id)
        sent = [t.id for t in stored if t.enqueued_at is not None]
        held = sorted((t for t in stored if t.enqueued_at is None), key=lambda t: (t.priority, t.created_at))
        assert len(sent) == 2 and len(held) == 2 and work_queue_len(redis_client) == 2
        assert plan_tick(s)["runs"][run_id]["skipped"] == "no room"
        _take(loaded, sent[0])
        done = Handoff(task_id=sent[0], status="complete", summary="done", commits=["a" * 40], head_sha="a" * 40)
        assert finish_task(sent[0], 1, None, done, s) == "complete"
        after = {t.id: t for t in tasks_of(loaded, run_id)}
        assert after[held[0].id].enqueued_at is not None and after[held[1].id].enqueued_at is None
        assert work_queue_len(redis_client) == 3
        _take(loaded, sent[1])
        stuck = Handoff(task_id=sent[1], status="blocked", summary="cannot", error="needs a person")
        assert finish_task(sent[1], 1, None, stuck, s) == "blocked"
        assert {t.id: t for t in tasks_of(loaded, run_id)}[held[1].id].enqueued_at is not None
        assert work_queue_len(redis_client) == 4
        assert len(plan_messages(redis_client)) == 1  # the ends asked the planner to refill the backlog
    assert len(fake.requests) == 1  # no model call between a slot freeing and a task filling it


def test_a_request_that_cannot_be_made_is_a_warning_not_an_error(loaded, make_settings, caplog):
    s = make_settings(redis_url="redis://127.0.0.1:1/0")
    assert request_plan(s) is False
    assert any("plan request not sent" in r.getMessage() for r in caplog.records)


def test_paused_runs_plan_nothing_when_asked(loaded, make_settings, redis_client):
    from agentswarm.control.steering import pause_run

    with FakeLLMServer() as fake:
        s = make_settings(llm_base_url=fake.url)
        run_id = start(s)
        with session_scope(loaded) as db:
            pause_run(db, run_id)
        assert plan_tick(s, requested=True)["runs"][run_id]["skipped"] == "paused"
    assert fake.requests == [] and tasks_of(loaded, run_id) == []
    with session_scope(loaded) as db:
        assert db.scalars(select(Task)).all() == []
