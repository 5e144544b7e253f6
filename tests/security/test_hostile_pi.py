"""The hostile-agent probe through Pi's own bash tool (AGENT=pi): contained the same way as the built-in agent.

Pi runs inside the isolated sandbox from the read-only tools cache; the scripted model drives its bash
tool through the model gate with the attacks of test_hostile_agent, plus one on the tools cache itself.
"""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from agentswarm.agent.install import install_pi, tools_dir
from agentswarm.config import get_settings
from agentswarm.db import HandoffRecord, LLMCall, Task, session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.simulator import simulate
from tests.security.test_hostile_agent import PACKAGE, SECRETS, _alive_sleepers, _attacks
from tests.support.tasks import add_tasks, statuses
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.bwrap, pytest.mark.node]


@pytest.fixture(scope="module")
def pi_home():
    if not shutil.which("npm"):
        pytest.skip("npm is not on PATH")
    try:
        install_pi(tools_dir())
    except Exception as exc:  # no registry access here: say so rather than pass
        pytest.skip(f"pi could not be installed: {exc}")
    return tools_dir()


def _hostile_pi(attacks: list[str], task_ids: list[str]):
    def script(body: dict) -> dict:
        names = {(t.get("function") or {}).get("name") for t in body.get("tools") or []}
        if not {"read", "bash", "edit", "write"} <= names:
            return simulate(body)
        done = len([m for m in body["messages"] if m.get("role") == "tool"])
        command = attacks[min(done, len(attacks) - 1)].replace("%(tid)s", task_ids[0])
        return {"content": None, "tool_calls": [{"name": "bash", "arguments": {"command": command}}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}

    return script


def test_a_hostile_agent_through_pis_bash_is_contained(pi_home, swarm, db, celery_worker, monkeypatch):
    main_before = swarm.git("rev-parse", "main")
    (PACKAGE / "pwned").unlink(missing_ok=True)
    (pi_home / "pwned").unlink(missing_ok=True)
    attacks = _attacks(swarm.hub)
    attacks.insert(0, f"touch {pi_home}/pwned 2>&1; rm -rf {pi_home}/pi 2>&1 | head -n 2; echo tools-done")
    task_ids: list[str] = []
    monkeypatch.setenv("AGENT", "pi")
    get_settings.cache_clear()
    with FakeLLMServer(script=_hostile_pi(attacks, task_ids)) as llm:
        env = {**swarm.env, "LLM_BASE_URL": llm.url, "MAX_ATTEMPTS": "1", "AGENT": "pi",
               "AGENT_TOOLS_DIR": str(pi_home)}
        task_ids += add_tasks(db, swarm.run_id, [["src/x.ts"]], max_attempts=1)
        celery_worker(queues="work", pool="threads", concurrency=1, env=env)
        tid = task_ids[0]
        wait_for(lambda: statuses(db, [tid])[tid] in ("complete", "failed", "blocked"), timeout=120)
        outputs = [str(m["content"]) for r in llm.requests for m in r["messages"] if m.get("role") == "tool"]
    seen = "\n".join(dict.fromkeys(outputs))
    assert "tools-done" in seen and "environ-done" in seen and "net-done" in seen and "spawned" in seen, seen[-2000:]
    for secret in SECRETS:
        assert secret not in seen, secret
    assert "closed 5432" in seen and "closed 6379" in seen and "open 5432" not in seen and "open 6379" not in seen
    assert not (PACKAGE / "pwned").exists() and not (swarm.hub / "pwned").exists()
    assert not (pi_home / "pwned").exists() and (pi_home / "pi" / "node_modules" / ".bin" / "pi").is_file()
    assert swarm.git("rev-parse", "main") == main_before
    wait_for(lambda: _alive_sleepers() == [], timeout=10)
    with session_scope(db) as s:
        task = s.get(Task, tid)
        handoff = s.scalars(select(HandoffRecord).where(HandoffRecord.task_id == tid)).one()
        calls = s.scalars(select(LLMCall).where(LLMCall.task_id == tid, LLMCall.role == "worker")).all()
    assert handoff.commits == [] and handoff.files_changed == [] and handoff.head_sha is None
    assert task.status != "complete"
    assert len(calls) >= 7 and handoff.prompt_tokens == sum(c.prompt_tokens for c in calls) >= 7000
