"""End to end over two endpoints: the first slow and at concurrency 2, the second fast; the first dies mid-run.

Real Celery workers (threads pool for work, one merge worker), local sandboxes reaching the model only
through the orchestrator's gate, the planner and monitor ticked here as beat would, and two fake
OpenAI-compatible servers over HTTP, each with its own key in its own variable. Overflow must go to the
second, the kill must lose no task, the calls must be split as routed and the costs must add up.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import func, select

from agentswarm.config import get_settings
from agentswarm.db import Event, HandoffRecord, LLMCall, MergeAttempt, Run, Task, session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.simulator import simulate
from agentswarm.git.hub import prepare_hub
from agentswarm.lifecycle.accounting import run_spend
from agentswarm.lifecycle.costs import cost_report
from agentswarm.lifecycle.features import sync_features
from agentswarm.lifecycle.runs import start_run
from agentswarm.llm.costs import union_seconds
from agentswarm.monitor.tick import monitor_tick
from agentswarm.planning.planner import plan_tick
from agentswarm.reconcile.tick import reconcile_tick
from tests.e2e.conftest import FEATURES, Swarm, tiny_target
from tests.e2e.test_swarm import _features_done
from tests.support.waiting import wait_for

SLOW_KEY, FAST_KEY = "sk-slow-endpoint-0b1c2d3e4f", "sk-fast-endpoint-9a8b7c6d5e"
GPU_PER_HOUR, IN, OUT = 3.6, 1.0, 10.0


class Slow:
    """The simulator behind a delay, counting how many requests it holds at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s, self.now, self.peak = delay_s, 0, 0
        self.lock = threading.Lock()
        self.dead = False  # killed: what it still holds fails (a 500), as calls cut by a dying server do

    def __call__(self, body: dict):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(self.delay_s)
            if self.dead:
                raise RuntimeError("the endpoint was killed")
            return simulate(body)
        finally:
            with self.lock:
                self.now -= 1


# Six features, four with no dependency: four agents at once keep more than two calls in flight.
SIX = FEATURES + [
    {"id": "core-003", "category": "core", "title": "Colour type", "priority": 1, "dependencies": [],
     "files": ["src/core/colour.ts"], "description": "An RGB colour type.", "acceptance": ["tsc passes"]},
    {"id": "ui-003", "category": "ui", "title": "Menu text", "priority": 1, "dependencies": [],
     "files": ["src/ui/menu.ts"], "description": "A menu label.", "acceptance": ["tsc passes"]},
]


@pytest.fixture
def swarm(tmp_path, db, redis_client, monkeypatch):
    """The e2e swarm of tests/e2e/conftest.py with six features and no LLM_BASE_URL: the test names endpoints."""
    target = tiny_target(tmp_path)
    (target / "FEATURES.json").write_text(json.dumps({"project": "Tiny", "version": 1, "features": SIX}))
    hub = tmp_path / "hub.git"
    env = {
        "HUB_PATH": str(hub), "TARGET_REPO_PATH": str(target), "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
        "LLM_MAX_RETRIES": "1", "RECONCILE_INSTALL": "", "RECONCILE_COMMANDS": json.dumps(["python3 check.py"]),
        "HEARTBEAT_INTERVAL_S": "1", "MAX_WORKERS": "4", "MERGE_DELETE_BRANCH": "false",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    prepare_hub(None, hub, target)
    yield Swarm(root=tmp_path, hub=hub, llm=None, env=env)  # type: ignore[arg-type]
    get_settings.cache_clear()


def test_overflow_and_failover_lose_no_task_and_costs_add_up(swarm, db, celery_worker, monkeypatch, request):
    slow_sim = Slow(1.0)
    slow, fast = FakeLLMServer(simulator=slow_sim).start(), FakeLLMServer().start()
    request.addfinalizer(fast.stop)
    request.addfinalizer(slow.stop)
    endpoints = [
        {"name": "slow", "base_url": slow.url, "key_env": "SLOW_KEY", "model": "slow-glm", "max_concurrency": 2,
         "gpu_price_per_hour": GPU_PER_HOUR, "gpus": 1, "backoff_s": 2},
        {"name": "fast", "base_url": fast.url, "key_env": "FAST_KEY", "model": "fast-glm", "max_concurrency": 20,
         "price_in_per_mtok": IN, "price_out_per_mtok": OUT},
    ]
    extra = {"LLM_ENDPOINTS": json.dumps(endpoints), "SLOW_KEY": SLOW_KEY, "FAST_KEY": FAST_KEY, "LLM_API_KEY": ""}
    swarm.env.update(extra)
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    with session_scope(db) as sess:
        sync_features(sess, swarm.root / "target" / "FEATURES.json")
        swarm.run_id = start_run(sess, get_settings()).id
    workers = [celery_worker(queues="work", pool="threads", concurrency=4, env=swarm.env),
               celery_worker(queues="merge", pool="solo", env=swarm.env)]
    killed: dict[str, float] = {}

    def beat():
        plan_tick()
        monitor_tick()
        if not killed and len(slow.requests) >= 4 and len(fast.requests) >= 2:  # early: most of the run is after
            killed["at"], killed["fast_before"] = time.time(), len(fast.requests)
            slow_sim.dead = True  # the first endpoint dies mid-run: calls in flight fail, new ones are refused
            slow.stop()

    wait_for(lambda: _features_done(db), timeout=300, every=1.0, tick=beat)
    assert killed, f"the run ended before the slow endpoint was killed ({len(slow.requests)} requests)"
    assert reconcile_tick()["green"] is True
    plan_tick()
    s = get_settings()
    with session_scope(db) as sess:
        run = sess.get(Run, swarm.run_id)
        assert run.status == "finished", run.stop_reason
        tasks = sess.scalars(select(Task).where(Task.run_id == swarm.run_id)).all()
        assert tasks and all(t.status == "complete" for t in tasks)  # no task lost to the dead endpoint
        merged = {m.task_id for m in sess.scalars(select(MergeAttempt).where(MergeAttempt.status == "merged"))}
        assert merged == {t.id for t in tasks}
        calls = sess.scalars(select(LLMCall).where(LLMCall.run_id == swarm.run_id)).all()
        split = dict(sess.execute(select(LLMCall.endpoint, func.count()).where(LLMCall.ok.is_(True))
                                  .group_by(LLMCall.endpoint)).all())
        report = cost_report(sess, swarm.run_id, s)
        spend = run_spend(sess, swarm.run_id)
        events = " ".join(f"{e.kind} {e.message} {json.dumps(e.data, default=str)}" for e in sess.scalars(select(Event)))
        handoffs = " ".join(f"{h.transcript} {h.error} {h.summary}" for h in sess.scalars(select(HandoffRecord)))
    # Routing: the slow one was filled to exactly its limit, overflow went to the fast one before the kill,
    # and after the kill every call that answered came from the fast one.
    assert slow_sim.peak == 2
    assert killed["fast_before"] >= 2
    assert set(split) == {"slow", "fast"} and split["slow"] >= 2 and split["fast"] >= 2, split
    # (a call to the slow one that started before the kill may still answer; one started after cannot)
    after = [c for c in calls if c.ok and c.started_at.timestamp() > killed["at"]]
    assert after and {c.endpoint for c in after} == {"fast"}
    assert all(c.endpoint in ("slow", "fast") for c in calls)
    assert {r["model"] for r in slow.requests} == {"slow-glm"} and {r["model"] for r in fast.requests} == {"fast-glm"}
    # Each endpoint got its own key and only its own.
    assert {h.get("Authorization") for h in slow.request_headers} == {f"Bearer {SLOW_KEY}"}
    assert {h.get("Authorization") for h in fast.request_headers} == {f"Bearer {FAST_KEY}"}
    # Costs add up: the endpoints' sum is the run's spend; tokens at list price; GPU time shared.
    by = {e["endpoint"]: e for e in report["endpoints"]}
    assert sum(e["cost_usd"] for e in report["endpoints"]) == pytest.approx(spend.cost_usd, abs=1e-8)
    fast_calls = [c for c in calls if c.endpoint == "fast"]
    assert by["fast"]["cost_usd"] == pytest.approx(
        sum(c.prompt_tokens * IN + c.completion_tokens * OUT for c in fast_calls) / 1e6, abs=1e-8)
    slow_spans = [(c.started_at.timestamp(), c.started_at.timestamp() + c.latency_ms / 1000) for c in calls
                  if c.endpoint == "slow"]
    busy = union_seconds(slow_spans)
    assert by["slow"]["busy_s"] == pytest.approx(busy, abs=1e-3)
    assert by["slow"]["cost_usd"] == pytest.approx(busy / 3600 * GPU_PER_HOUR, rel=1e-6)
    assert busy < sum(b - a for a, b in slow_spans)  # overlapping calls shared the GPU time
    assert report["merged_commits"] >= len(tasks) and report["per_merged_commit_usd"] > 0
    # No key anywhere it could be read back: rows, events, handoffs, the workers' logs.
    stored = " ".join(f"{c.error} {c.model} {c.endpoint}" for c in calls) + events + handoffs
    logs = " ".join(w.log() for w in workers)
    for key in (SLOW_KEY, FAST_KEY):
        assert key not in stored and key not in logs
