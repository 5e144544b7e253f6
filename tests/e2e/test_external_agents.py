"""End to end with an external agent: AGENT=mini-swe-agent and AGENT=pi build the tiny product's features.

The agent's CLI is installed once (pinned, from PyPI or npm) into the tools cache and bound read-only
into the isolated local sandbox; it reaches the simulator only through the model gate. Skipped, with
the reason, when the registry cannot be reached or the tool cannot be installed.
"""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import func, select

from agentswarm.agent.install import install_agent, tools_dir
from agentswarm.config import get_settings
from agentswarm.control.taskview import render_step, show_task
from agentswarm.db import Feature, HandoffRecord, LLMCall, MergeAttempt, Task, session_scope
from agentswarm.monitor.tick import monitor_tick
from agentswarm.planning.planner import plan_tick
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.node, pytest.mark.bwrap]


@pytest.fixture(scope="session")
def installed() -> dict[str, str]:
    """Each agent's executable, or why it is missing (installed once; later runs find the cache)."""
    found: dict[str, str] = {}
    for name in ("mini-swe-agent", "pi"):
        if name == "pi" and not shutil.which("npm"):
            found[name] = "skip: npm is not on PATH"
            continue
        try:
            found[name] = str(install_agent(name, tools_dir()))
        except Exception as exc:  # no registry access here: say so rather than pass
            found[name] = f"skip: {name} could not be installed: {exc}"
    return found


def _done(db_url) -> bool:
    with session_scope(db_url) as s:
        return s.scalar(select(func.count()).where(Feature.status != "done")) == 0


@pytest.mark.parametrize("agent", ["mini-swe-agent", "pi"])
def test_external_agent_lands_tasks_through_the_gate(agent, installed, swarm, db, celery_worker, monkeypatch):
    if installed[agent].startswith("skip: "):
        pytest.skip(installed[agent][6:])
    extra = {"AGENT": agent, "AGENT_TOOLS_DIR": str(tools_dir())}
    swarm.env.update(extra)
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    celery_worker(queues="work", pool="threads", concurrency=2, env=swarm.env)
    celery_worker(queues="merge", pool="solo", env=swarm.env)

    def beat():
        plan_tick()
        monitor_tick()

    wait_for(lambda: _done(db), timeout=280, every=1.0, tick=beat)
    with session_scope(db) as s:
        tasks = s.scalars(select(Task).where(Task.run_id == swarm.run_id)).all()
        merged = {m.task_id for m in s.scalars(select(MergeAttempt).where(MergeAttempt.status == "merged"))}
        assert tasks and {t.id for t in tasks if t.status == "complete"} <= merged
        handoffs = s.scalars(select(HandoffRecord).where(HandoffRecord.status == "complete")).all()
        assert handoffs and all(h.commits and h.files_changed for h in handoffs)  # measured by the orchestrator
        for h in handoffs:
            lines = [json.loads(line) for line in h.transcript.splitlines() if line.strip()]
            starts = [e for e in lines if e.get("event") == "external_start"]
            assert starts and starts[0]["agent"] == agent, lines[:3]
            assert h.summary.startswith("Implemented '"), h.summary[:300]  # the agent's last words, not its log
            calls = s.scalar(select(func.count()).where(LLMCall.task_id == h.task_id, LLMCall.role == "worker"))
            assert calls >= 3 and h.llm_calls == calls  # every call went through the model gate and was recorded
            # The agent's own record became steps, shown as the built-in agent's are: its bash calls, their output.
            said = [e for e in lines if e["kind"] == "assistant"]
            assert len(said) >= 3 and all(e["prompt_tokens"] > 0 for e in said), said
            assert [c["name"] for c in said[0]["tool_calls"]] == ["bash"], said[0]
            assert any(e["kind"] == "tool" and e["name"] == "bash" and e["id"] == said[0]["tool_calls"][0]["id"]
                       for e in lines)
            view = show_task(s, s.get(Task, h.task_id))["transcript"]
            assert view["kinds"]["assistant"] == len(said) and view["kinds"]["tool"] >= 3, view
            assert any(" bash(" in render_step(e) for e in said)  # as `agentswarm logs` prints them


@pytest.mark.skipif(shutil.which("npm") is None, reason="the gate's tests need node and npm (nodejs, npm)")
@pytest.mark.parametrize("agent", ["mini-swe-agent", "pi"])
def test_external_agent_fixes_its_type_error_from_the_presubmit_feedback(agent, installed, gated, db, celery_worker):
    """VoxelCraft with tsc as presubmit: the first start writes a type error, the failure comes back in the
    agent's prompt, the second start fixes it, and the branch lands within the attempt."""
    from agentswarm.db import MergeAttempt as Merge
    from tests.e2e.voxelcraft import all_done, beat, feature, git, start_workers

    if installed[agent].startswith("skip: "):
        pytest.skip(installed[agent][6:])
    env, hub, _ = gated([feature("g-001", "alpha")], faults="type:1.0", AGENT=agent,
                        AGENT_TOOLS_DIR=str(tools_dir()))
    start_workers(celery_worker, env)
    wait_for(lambda: all_done(db), timeout=280, every=1.0, tick=beat)
    with session_scope(db) as s:
        tasks = s.scalars(select(Task)).all()
        assert tasks and all(t.attempts == 1 for t in tasks), [(t.id, t.attempts) for t in tasks]
        for h in s.scalars(select(HandoffRecord)):
            runs = [(r["ok"], r["unavailable"]) for r in h.presubmit]
            assert runs[0] == (False, False) and runs[-1] == (True, False), runs
            assert "TS2322" in h.presubmit[0]["output"]
            message = git(hub, "log", "-1", "--format=%B", h.head_sha)
            assert "Sim-Fixed: type" in message and "Sim-Fault:" not in message
            starts = [e for e in map(json.loads, h.transcript.splitlines()) if e.get("event") == "external_start"]
            assert len(starts) == 2 and starts[0]["agent"] == agent
        assert not s.scalars(select(Merge).where(Merge.status == "rejected")).all()
