"""Costs that add up: GPU-hours shared by overlapping calls, tokens per endpoint, per task, per commit, wasted."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from agentswarm.db.models import LLMCall, MergeAttempt, MergeStatus, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.lifecycle.accounting import record_llm_call, run_spend
from agentswarm.lifecycle.costs import cost_report
from agentswarm.llm.costs import gpu_cost, sandbox_cost, uncovered_seconds, union_seconds
from tests.support.runs import start

ENDPOINTS = json.dumps([
    {"name": "gpu", "base_url": "http://127.0.0.1:1", "gpu_price_per_hour": 3.6, "gpus": 2},
    {"name": "api", "base_url": "http://127.0.0.1:2", "price_in_per_mtok": 1.0, "price_out_per_mtok": 10.0},
])


def test_union_and_uncovered_arithmetic():
    assert union_seconds([(0, 10), (0, 10)]) == 10
    assert union_seconds([(0, 10), (5, 15), (20, 21)]) == 16
    assert union_seconds([]) == 0
    assert uncovered_seconds((0, 10), [(0, 10)]) == 0
    assert uncovered_seconds((0, 10), [(2, 4), (3, 5), (8, 30)]) == 5
    assert gpu_cost(10, 3.6, gpus=1) == pytest.approx(0.01)
    assert gpu_cost(10, 3.6, gpus=8) == pytest.approx(0.08)
    assert sandbox_cost(3600, 2.0, 4096, 0.1, 0.01) == pytest.approx(0.2 + 0.04)


def _call(sess, s, run_id, endpoint, started, seconds, *, task=None, attempt=None, p=0, c=0, role="worker"):
    return record_llm_call(sess, run_id=run_id, task_id=task, role=role, model="m", prompt_tokens=p,
                           completion_tokens=c, latency_ms=seconds * 1000, ok=True, error=None, settings=s,
                           endpoint=endpoint, started_at=started, attempt=attempt)


def test_two_overlapping_calls_on_a_gpu_hour_endpoint_charge_the_time_once(db, make_settings):
    s = make_settings(llm_endpoints=ENDPOINTS)
    run_id = start(s)
    t0 = time.time() - 100
    with session_scope(db) as sess:
        one = _call(sess, s, run_id, "gpu", t0, 10)
        two = _call(sess, s, run_id, "gpu", t0, 10)  # the same 10 s: already paid for
        three = _call(sess, s, run_id, "gpu", t0 + 5, 10)  # 5 s of it new
    ten_s = 10 / 3600 * 3.6 * 2
    assert one.cost_usd == pytest.approx(ten_s) and two.cost_usd == 0
    assert three.cost_usd == pytest.approx(ten_s / 2)
    with session_scope(db) as sess:
        assert run_spend(sess, run_id).cost_usd == pytest.approx(ten_s * 1.5)
        report = cost_report(sess, run_id, s)
    [gpu] = report["endpoints"]
    assert (gpu["endpoint"], gpu["calls"], gpu["busy_s"]) == ("gpu", 3, 15.0)
    assert gpu["cost_usd"] == pytest.approx(15 / 3600 * 3.6 * 2)


def test_report_adds_up_per_endpoint_task_commit_and_waste(db, make_settings):
    s = make_settings(llm_endpoints=ENDPOINTS)
    run_id = start(s)
    t0 = time.time() - 100
    with session_scope(db) as sess:
        landed = Task(run_id=run_id, description="d", branch="swarm/a", status=TaskStatus.complete, attempts=2)
        failed = Task(run_id=run_id, description="d", branch="swarm/b", status=TaskStatus.failed, attempts=1)
        sess.add_all([landed, failed])
        sess.flush()
        sess.add(MergeAttempt(task_id=landed.id, branch="swarm/a", strategy="fast-forward",
                              status=MergeStatus.merged, commits_landed=["c1", "c2"]))
        _call(sess, s, run_id, "api", t0, 1, task=landed.id, attempt=1, p=1000, c=100)  # superseded attempt
        _call(sess, s, run_id, "api", t0, 1, task=landed.id, attempt=2, p=2000, c=200)  # the one that landed
        _call(sess, s, run_id, "api", t0, 1, task=failed.id, attempt=1, p=500, c=50)  # never landed
        _call(sess, s, run_id, "gpu", t0, 36, role="planner")
    with session_scope(db) as sess:
        report = cost_report(sess, run_id, s)
        rows = list(sess.scalars(select(LLMCall)))
    api = (1000 + 2000 + 500) * 1.0 / 1e6 + (100 + 200 + 50) * 10.0 / 1e6
    gpu = 36 / 3600 * 3.6 * 2
    by = {e["endpoint"]: e for e in report["endpoints"]}
    assert by["api"]["cost_usd"] == pytest.approx(api) and by["gpu"]["cost_usd"] == pytest.approx(gpu)
    assert report["llm_usd"] == pytest.approx(sum(r.cost_usd for r in rows))
    assert report["total_usd"] == pytest.approx(api + gpu) and report["sandbox_usd"] == 0
    assert report["merged_commits"] == 2 and report["per_merged_commit_usd"] == pytest.approx((api + gpu) / 2)
    assert report["per_task_usd"] == pytest.approx((api + gpu) / 2)
    waste = report["wasted"]
    assert (waste["calls"], waste["tokens"]) == (2, 1100 + 550)
    assert waste["cost_usd"] == pytest.approx((1500 * 1.0 + 150 * 10.0) / 1e6)


def test_modal_sandbox_time_is_charged_only_on_modal(db, make_settings):
    from agentswarm.db.models import HandoffRecord

    s = make_settings(modal_cpu_price_per_hour=0.36, modal_memory_price_per_gib_hour=0.036, sandbox_cpu=2,
                      sandbox_memory_mb=2048)
    run_id = start(s)
    with session_scope(db) as sess:
        t = Task(run_id=run_id, description="d", branch="swarm/x", status=TaskStatus.failed, attempts=1)
        sess.add(t)
        sess.flush()
        sess.add(HandoffRecord(task_id=t.id, attempt=1, status="failed", duration_s=100.0))
    with session_scope(db) as sess:
        assert cost_report(sess, run_id, s)["sandbox_usd"] == 0  # the local backend costs nothing extra
        modal = cost_report(sess, run_id, s.model_copy(update={"sandbox_backend": "modal"}))
    assert modal["sandbox_s"] == 100
    assert modal["sandbox_usd"] == pytest.approx(100 / 3600 * (2 * 0.36 + 2 * 0.036))
