"""Accounting exact against the fake server's usage; runs stop at their budgets and end when work is done."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from agentswarm.db.models import Event, Feature, LLMCall, MainCheck, Run, Task
from agentswarm.db.session import session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.git.hub import main_sha
from agentswarm.lifecycle.accounting import record_llm_call, run_spend
from agentswarm.lifecycle.runs import end_run, start_run
from agentswarm.planning.planner import plan_tick
from agentswarm.queue.broker import queue_keys
from tests.support.runs import start

IN, OUT = 3.0, 15.0  # dollars per million tokens


def _reply(fid: str, prompt: int, completion: int) -> dict:
    content = json.dumps([{"title": f"Build {fid}", "description": "d", "scope": [f"src/{fid}.ts"],
                           "feature_ids": [fid]}])
    return {"content": content, "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


def _run(url, run_id) -> Run:
    with session_scope(url) as s:
        return s.get(Run, run_id)


def test_token_and_dollar_accounting_is_exact(loaded, make_settings, redis_client):
    script = [_reply("core-001", 12_345, 678), _reply("ui-001", 1_001, 99_999), _reply("ui-002", 7, 3)]
    with FakeLLMServer(script=script) as fake:
        s = make_settings(llm_base_url=fake.url, llm_price_in_per_mtok=IN, llm_price_out_per_mtok=OUT,
                          max_workers=50)
        run_id = start(s)
        for _ in script:
            plan_tick(s)
        served = fake.usage_total
    with session_scope(loaded) as sess:
        spend = run_spend(sess, run_id)
        calls = list(sess.scalars(select(LLMCall).order_by(LLMCall.id)))
    assert (spend.prompt_tokens, spend.completion_tokens) == (served.prompt_tokens, served.completion_tokens)
    assert (spend.prompt_tokens, spend.completion_tokens) == (13_353, 100_680)
    assert spend.cost_usd == pytest.approx((13_353 * IN + 100_680 * OUT) / 1e6, abs=1e-12)
    assert [(c.prompt_tokens, c.completion_tokens) for c in calls] == [(12_345, 678), (1_001, 99_999), (7, 3)]
    assert calls[0].cost_usd == pytest.approx((12_345 * IN + 678 * OUT) / 1e6, abs=1e-12)
    assert all(c.role == "planner" and c.ok and c.model for c in calls)


def test_worker_calls_count_and_gpu_pricing(db, make_settings):
    s = make_settings(llm_gpu_price_per_hour=3.6)
    run_id = start(s)
    with session_scope(db) as sess:
        row = record_llm_call(sess, run_id=run_id, task_id=None, role="worker", model="glm-5", prompt_tokens=10,
                              completion_tokens=5, latency_ms=2000, ok=True, error=None, settings=s)
        assert row.cost_usd == pytest.approx(2 / 3600 * 3.6)
        assert run_spend(sess, run_id).tokens == 15


def test_the_run_stops_at_its_token_budget(loaded, make_settings, redis_client):
    script = [_reply("core-001", 1500, 500), _reply("ui-001", 1500, 500), _reply("ui-002", 1, 1)]
    with FakeLLMServer(script=script) as fake:
        s = make_settings(llm_base_url=fake.url, run_max_tokens=3000, max_workers=50)
        run_id = start(s)
        plan_tick(s)  # 2000 tokens: under budget, its task is stored
        second = plan_tick(s)  # 4000 tokens: this call spent the budget, its task is not stored
        third = plan_tick(s)
    assert "token budget reached" in second["runs"][run_id]["stopped"]
    assert third == {"runs": {}}  # an ended run is not planned for
    assert len(fake.requests) == 2
    run = _run(loaded, run_id)
    assert run.status == "stopped" and "4000 of 3000 tokens" in run.stop_reason and run.ended_at
    with session_scope(loaded) as sess:
        assert [t.feature_ids for t in sess.scalars(select(Task))] == [["core-001"]]
        kinds = [e.kind for e in sess.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.id))]
    assert kinds.count("run.budget") == 1 and kinds[-1] == "run.ended"


def test_the_run_stops_at_its_dollar_budget_before_calling_again(loaded, make_settings):
    with FakeLLMServer(script=[_reply("core-001", 1_000_000, 0)]) as fake:
        s = make_settings(llm_base_url=fake.url, llm_price_in_per_mtok=2.0, run_max_dollars=1.5)
        run_id = start(s)
        plan_tick(s)
        plan_tick(s)
    assert len(fake.requests) == 1
    run = _run(loaded, run_id)
    assert run.status == "stopped" and "dollar budget reached: $2.0000 of $1.50" in run.stop_reason


def test_the_deadline_stops_the_run_and_cancels_unsent_work_only(loaded, make_settings):
    s = make_settings()
    run_id = start(s)
    with session_scope(loaded) as sess:
        sess.add_all([Task(run_id=run_id, title="held", description="d", branch="b1"),
                      Task(run_id=run_id, title="sent", description="d", branch="b2", enqueued_at=datetime.now(UTC)),
                      Task(run_id=run_id, title="working", description="d", branch="b3", status="running")])
        sess.execute(update(Run).values(deadline_at=datetime.now(UTC) - timedelta(seconds=1)))
    plan_tick(s)
    run = _run(loaded, run_id)
    assert run.status == "stopped" and run.stop_reason.startswith("deadline reached")
    with session_scope(loaded) as sess:
        status = dict(sess.execute(select(Task.title, Task.status)).all())
    assert status == {"held": "cancelled", "sent": "pending", "working": "running"}


def test_task_and_iteration_budgets_stop_planning_and_end_the_run_once_work_ends(loaded, make_settings):
    from agentswarm.db.states import transition

    with FakeLLMServer(script=[_reply("core-001", 1, 1), _reply("ui-001", 1, 1)]) as fake:
        s = make_settings(llm_base_url=fake.url, max_planner_iterations=1)
        run_id = start(s)
        plan_tick(s)
        report = plan_tick(s)
        assert "planner iterations reached: 1 of 1" in report["runs"][run_id]["stopped"]
        assert _run(loaded, run_id).status == "active"  # its task may still run
        with session_scope(loaded) as sess:
            [tid] = sess.scalars(select(Task.id)).all()
            for a, b in (("pending", "assigned"), ("assigned", "running"), ("running", "complete")):
                transition(sess, tid, a, b)
        plan_tick(s)
    assert len(fake.requests) == 1
    run = _run(loaded, run_id)
    assert run.status == "stopped" and "planner iterations" in run.stop_reason


def _checked(url, run_id, sha, result) -> None:
    now = datetime.now(UTC)
    with session_scope(url) as sess:
        sess.add(MainCheck(run_id=run_id, sha=sha, result=result, started_at=now, finished_at=now))


def test_the_run_finishes_when_every_feature_is_done_and_main_was_seen_green(loaded, make_settings, redis_client):
    s = make_settings()
    run_id = start(s)
    sha = main_sha(s.hub_path)
    with session_scope(loaded) as sess:
        sess.execute(update(Feature).values(status="done"))
    assert plan_tick(s)["runs"][run_id]["stopped"] == (
        f"every feature is done; waiting: the reconciler has not checked main {sha[:10]} yet")
    assert _run(loaded, run_id).status == "active"
    # a check of main is asked for at once (on whichever priority list the transport put it)
    assert sum(redis_client.llen(k) for k in queue_keys("reconcile")) == 1
    _checked(loaded, run_id, sha, "red")
    assert plan_tick(s)["runs"][run_id]["stopped"].endswith(f"waiting: main {sha[:10]} is red")
    _checked(loaded, run_id, sha, "green")
    assert plan_tick(s)["runs"][run_id]["stopped"] == "every feature is done"
    run = _run(loaded, run_id)
    assert run.status == "finished" and run.stop_reason == "every feature is done"


def test_without_reconcile_commands_the_run_finishes_on_features_alone(loaded, make_settings):
    s = make_settings(reconcile_commands=[])
    run_id = start(s)
    with session_scope(loaded) as sess:
        sess.execute(update(Feature).values(status="done"))
    assert plan_tick(s)["runs"][run_id]["stopped"] == "every feature is done"
    assert _run(loaded, run_id).stop_reason == "every feature is done (main not checked: RECONCILE_COMMANDS is empty)"


def test_start_resumes_the_active_run_and_end_is_idempotent(db, make_settings):
    s = make_settings(run_max_tasks=7, run_max_tokens=1234, run_max_dollars=5.5, run_deadline_s=60)
    with session_scope(db) as sess:
        a = start_run(sess, s)
        b = start_run(sess, s)
        assert a.id == b.id and (a.max_tasks, a.max_tokens, a.max_dollars) == (7, 1234, 5.5)
        assert 55 <= (a.deadline_at - datetime.now(UTC)).total_seconds() <= 60
        assert end_run(sess, a.id, "stopped", "by hand")
        assert not end_run(sess, a.id, "finished", "again")
        assert start_run(sess, s).id != a.id
    with pytest.raises(ValueError):
        with session_scope(db) as sess:
            end_run(sess, a.id, "active", "no")


def test_the_iteration_cap_grows_with_the_features_left_unless_set(db, make_settings):
    """Event-driven planning makes a pass per freed slot or two: a flat 100 stopped a 4-slot run on VoxelCraft at
    113 of 200 features. Unset, the cap is max(100, 3 x features not done); set, it is what was set."""
    from agentswarm.db.models import Feature
    from agentswarm.lifecycle.budgets import max_iterations

    with session_scope(db) as sess:
        sess.add_all([Feature(id=f"f-{i}", category="c", title=str(i), status="done" if i < 10 else "pending")
                      for i in range(60)])
    s = make_settings()
    with session_scope(db) as sess:
        run = start_run(sess, s)
        assert max_iterations(run, s) == 150  # 50 features left
        end_run(sess, run.id, "stopped", "by hand")
        run = start_run(sess, make_settings(max_planner_iterations=7))
        assert max_iterations(run, s) == 7
        end_run(sess, run.id, "stopped", "by hand")
        sess.execute(update(Feature).values(status="done"))
        assert max_iterations(start_run(sess, s), s) == 100
