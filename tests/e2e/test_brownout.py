"""A small run against a model endpoint in a brownout: 10% 429 with Retry-After, 10% 500, 3% hangs past the
timeout, 2% answers cut half way (agentswarm/demo/brownout.py, in front of the fake LLM).

Real Celery workers (threads pool for work, one merge worker), local sandboxes reaching the model only through the
orchestrator's gate, the planner and monitor ticked here as beat would. Every feature must land once, no attempt may
fail because of a broken answer, every call the brownout broke must be recorded as failed, and the run must end.
"""

from __future__ import annotations

import json

from sqlalchemy import func, select

from agentswarm.config import get_settings
from agentswarm.db import Feature, HandoffRecord, LLMCall, MergeAttempt, Run, Task, session_scope
from agentswarm.demo.brownout import KINDS, BrownoutProxy
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.git.hub import prepare_hub
from agentswarm.lifecycle.features import sync_features
from agentswarm.lifecycle.runs import start_run
from agentswarm.monitor.tick import monitor_tick
from agentswarm.planning.planner import plan_tick
from agentswarm.reconcile.tick import reconcile_tick
from tests.e2e.conftest import FEATURES, tiny_target
from tests.e2e.test_swarm import _features_done
from tests.support.waiting import wait_for

# One die for the agents' calls (they send tools) and one for the orchestrator's: the planner's first call is cut
# (no Content-Length), then a 500, then answered; the agents' first 16 calls hold a cut of each form, a hang, a 429
# and a 500, however the agents' calls interleave with the planner's.
SEED = 22121
LANE = lambda body: "agent" if body.get("tools") else "orchestrator"  # noqa: E731
# A call's limit upstream (the planner's, and the gate's for the agents), the agent's own limit on its call to the
# gate (longer: the gate retries a hang upstream before the agent gives up on it, so every call the gate makes is
# recorded with the attempt), and how long a hang lasts (past both).
TIMEOUT_S, AGENT_TIMEOUT_S, HANG_S = 8, 30, 45
BROKEN = ("LLMProtocolError", "not valid JSON", "cut off", "truncated", "before [DONE]", "not a JSON object")


def test_a_brownout_slows_a_run_down_but_breaks_nothing(tmp_path, db, redis_client, celery_worker, monkeypatch):
    target, hub = tiny_target(tmp_path), tmp_path / "hub.git"
    with FakeLLMServer() as llm, BrownoutProxy(llm.url, seed=SEED, hang_s=HANG_S, retry_after_s=1,
                                                   lane=LANE) as proxy:
        endpoint = {"name": "brown", "base_url": proxy.url, "model": "fake-glm", "max_concurrency": 20,
                    "backoff_s": 0.25, "timeout_s": TIMEOUT_S}
        env = {
            "HUB_PATH": str(hub), "TARGET_REPO_PATH": str(target), "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
            "LLM_ENDPOINTS": json.dumps([endpoint]), "LLM_TIMEOUT_S": str(AGENT_TIMEOUT_S), "LLM_MAX_RETRIES": "3",
            "RECONCILE_INSTALL": "", "RECONCILE_COMMANDS": json.dumps(["python3 check.py"]),
            "HEARTBEAT_INTERVAL_S": "1", "MAX_WORKERS": "3", "MERGE_DELETE_BRANCH": "false",
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("LLM_BASE_URL", raising=False)
        get_settings.cache_clear()
        prepare_hub(None, hub, target)
        with session_scope(db) as s:
            sync_features(s, target / "FEATURES.json")
            run_id = start_run(s, get_settings()).id
        celery_worker(queues="work", pool="threads", concurrency=3, env=env)
        celery_worker(queues="merge", pool="solo", env=env)

        def beat() -> None:
            plan_tick()
            monitor_tick()

        wait_for(lambda: _features_done(db), timeout=600, every=1.0, tick=beat)
        assert reconcile_tick()["green"] is True
        plan_tick()
        outcomes = proxy.counts()
        rolls = proxy.rolls
        by_side = {side: proxy.counts(lambda body, side=side: LANE(body) == side) for side in ("agent", "orchestrator")}
    get_settings.cache_clear()
    with session_scope(db) as s:
        run = s.get(Run, run_id)
        tasks = s.scalars(select(Task).where(Task.run_id == run_id)).all()
        merged = dict(s.execute(select(MergeAttempt.task_id, func.count()).where(MergeAttempt.status == "merged")
                                .group_by(MergeAttempt.task_id)).all())
        features = dict(s.execute(select(Feature.id, Feature.status)).all())
        attempts = [(h.task_id, h.attempt, h.status, h.error) for h in s.scalars(select(HandoffRecord))]
        rows = s.execute(select(LLMCall.role, LLMCall.ok, func.count()).where(LLMCall.run_id == run_id)
                         .group_by(LLMCall.role, LLMCall.ok)).all()
    assert all(outcomes[k] >= 1 for k in KINDS), outcomes  # the brownout struck with every kind of fault
    # The run ended, every feature landed, each by exactly one task merged once.
    assert run.status == "finished", run.stop_reason
    assert set(features.values()) == {"done"}, features
    landed = [f for t in tasks if t.id in merged for f in t.feature_ids]
    assert sorted(landed) == sorted(f["id"] for f in FEATURES) and set(merged.values()) == {1}, merged
    # No attempt failed because an answer was broken (the client and the gate ask again).
    assert not [a for a in attempts if a[3] and any(b in a[3] for b in BROKEN)], attempts
    # Every call the brownout broke is recorded as failed, no broken answer counted as a good call: the
    # orchestrator's own calls (planner, subplanner, reconciler) and the agents' (through the model gate), apart.
    for side in ("agent", "orchestrator"):  # each side got a cut of the form only reading the JSON tells
        assert ("cut-closed", side) in {(o, LANE(body)) for o, body in rolls}, [o for o, _ in rolls]
    recorded = {side: {ok: sum(n for role, o, n in rows if o is ok and (role == "worker") == (side == "agent"))
                       for ok in (True, False)} for side in by_side}
    for side in ("orchestrator", "agent"):
        seen, detail = by_side[side], f"{side}: proxy {by_side[side]}; llm_calls (role, ok, count) {rows}"
        assert recorded[side][True] <= seen["ok"], detail
        assert recorded[side][False] >= sum(seen[k] for k in KINDS), detail

