"""The work stage on the real stack: many tasks at once, secrets, the hub's rules, deadlines, a killed worker."""

from __future__ import annotations

import json
import signal

from sqlalchemy import select

from agentswarm.config import get_settings
from agentswarm.db import Feature, HandoffRecord, MergeAttempt, Task, session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.simulator import simulate
from agentswarm.monitor.tick import monitor_tick
from tests.support.tasks import add_tasks, statuses
from tests.support.waiting import wait_for


def test_twenty_tasks_at_once_leave_nothing_behind(swarm, db, celery_worker):
    ids = add_tasks(db, swarm.run_id, [[f"src/gen/m{i}.ts"] for i in range(20)])
    celery_worker(queues="work", pool="threads", concurrency=20, env={**swarm.env, "MAX_WORKERS": "20"})
    wait_for(lambda: set(statuses(db, ids).values()) == {"complete"}, timeout=180, every=0.5)
    branches = swarm.git("for-each-ref", "--format=%(refname:short)", "refs/heads/swarm/").split()
    assert sorted(branches) == sorted(f"swarm/{i}" for i in ids)
    for tid in ids:
        assert json.loads("[" + swarm.git("ls-tree", "--name-only", f"swarm/{tid}", "src/gen/").replace("\n", ",")
                          .replace("src", '"src').replace(".ts", '.ts"') + "]") is not None
    wait_for(lambda: swarm.sandbox_dirs() == [], timeout=10)
    from agentswarm.sandbox import procs

    assert procs.marked_processes(str(swarm.root / "sandboxes")) == {}


def _env_probe_script(body: dict) -> dict:
    """A worker that looks at its environment and tries to push where it must not, then writes its file."""
    msgs = body["messages"]
    if not any(m.get("role") == "system" and m["content"].startswith("# AgentSwarm worker") for m in msgs):
        return simulate(body)
    results = [m for m in msgs if m.get("role") == "tool"]
    steps = [
        {"name": "run", "arguments": {"command": "env"}},
        {"name": "run", "arguments": {"command": "git commit -q --allow-empty -m sneaky && git push origin HEAD:refs/heads/main 2>&1; echo rc=$?"}},
        {"name": "run", "arguments": {"command": "git push origin HEAD:refs/heads/feature/x 2>&1; echo rc=$?"}},
        {"name": "write_file", "arguments": {"path": "src/probe.ts", "content": "export const probe = 1;\n"}},
        {"name": "finish", "arguments": {"status": "complete", "summary": "probed"}},
    ]
    return {"content": None, "tool_calls": [steps[min(len(results), len(steps) - 1)]]}


def test_agent_sees_no_orchestrator_secret_and_the_hub_refuses_main(swarm, db, celery_worker, monkeypatch):
    main_before = swarm.git("rev-parse", "main")
    with FakeLLMServer(script=_env_probe_script) as llm:
        env = {**swarm.env, "LLM_BASE_URL": llm.url}
        [tid] = add_tasks(db, swarm.run_id, [["src/probe.ts"]])
        celery_worker(queues="work", pool="threads", concurrency=2, env=env)
        wait_for(lambda: statuses(db, [tid])[tid] in ("complete", "failed", "blocked"), timeout=90)
        tool_results = [m["content"] for r in llm.requests for m in r["messages"] if m.get("role") == "tool"]
    assert statuses(db, [tid])[tid] == "complete"
    env_dump = next(t for t in tool_results if "HOME=" in t)
    for secret in ("DATABASE_URL", "REDIS_URL", "aws-orchestrator-secret", "AWS_SECRET_ACCESS_KEY",
                   "sk-e2e-secret-key", "LLM_API_KEY"):
        assert secret not in env_dump, secret
    pushes = [t for t in tool_results if "rc=" in t]
    # Both pushes fail: the hub is not even visible from an isolated sandbox (and refuses main anyway).
    assert len(pushes) >= 2 and all("rc=0" not in t for t in pushes[:2]), pushes
    assert swarm.git("rev-parse", "main") == main_before
    assert "feature/x" not in swarm.git("for-each-ref", "--format=%(refname)")
    with session_scope(db) as s:
        transcript = s.scalars(select(HandoffRecord.transcript).where(HandoffRecord.task_id == tid)).one()
    assert "sk-e2e-secret-key" not in transcript


def test_task_that_runs_forever_is_stopped_failed_and_removed(swarm, db, celery_worker):
    with FakeLLMServer(latency_s=600) as llm:  # the model never answers in time
        env = {**swarm.env, "LLM_BASE_URL": llm.url, "WORKER_TIMEOUT": "6", "LLM_TIMEOUT_S": "600",
               "MAX_ATTEMPTS": "1"}
        [tid] = add_tasks(db, swarm.run_id, [["src/slow.ts"]], max_attempts=1)
        celery_worker(queues="work", pool="threads", concurrency=1, env=env)
        wait_for(lambda: statuses(db, [tid])[tid] == "failed", timeout=60)
    with session_scope(db) as s:
        task = s.get(Task, tid)
        assert "timed out" in (task.error or "")
        assert (task.finished_at - task.started_at).total_seconds() < 30
    wait_for(lambda: swarm.sandbox_dirs() == [], timeout=10)


def test_killed_worker_task_runs_again_once_with_one_branch(swarm, db, celery_worker, monkeypatch):
    with FakeLLMServer(latency_s=1.5) as llm:  # slow enough to kill the worker mid-task
        env = {**swarm.env, "LLM_BASE_URL": llm.url, "STALE_HEARTBEAT_S": "3"}
        monkeypatch.setenv("LLM_BASE_URL", llm.url)
        monkeypatch.setenv("STALE_HEARTBEAT_S", "3")
        get_settings.cache_clear()
        [tid] = add_tasks(db, swarm.run_id, [["src/killed.ts"]])
        first = celery_worker(queues="work", pool="threads", concurrency=1, env=env)
        wait_for(lambda: statuses(db, [tid])[tid] == "running" and len(llm.requests) >= 1, timeout=60)
        with session_scope(db) as s:
            old_sandbox = s.get(Task, tid).sandbox_id
        assert old_sandbox
        first.kill(signal.SIGKILL)
        second = celery_worker(queues="work", pool="threads", concurrency=1, env=env)
        wait_for(lambda: statuses(db, [tid])[tid] == "complete", timeout=120, every=1.0, tick=monitor_tick)
        assert second.proc.poll() is None
    with session_scope(db) as s:
        task = s.get(Task, tid)
        handoffs = s.scalars(select(HandoffRecord).where(HandoffRecord.task_id == tid)).all()
        assert task.attempts == 2 and task.sandbox_id != old_sandbox
        assert [h.attempt for h in handoffs] == [2]
    assert swarm.git("for-each-ref", "--format=%(refname)", "refs/heads/swarm/").split() == [f"refs/heads/swarm/{tid}"]
    assert not (swarm.root / "sandboxes" / old_sandbox).exists()
    wait_for(lambda: swarm.sandbox_dirs() == [], timeout=10)


def test_large_task_is_decomposed_and_the_parent_ends_with_its_children(swarm, db, celery_worker):
    scope = [f"src/big/part{i}.ts" for i in range(6)]
    [parent] = add_tasks(db, swarm.run_id, [scope], kind="feature", feature_ids=["core-001"])
    celery_worker(queues="work", pool="threads", concurrency=4, env=swarm.env)
    celery_worker(queues="merge", pool="solo", env=swarm.env)
    wait_for(lambda: statuses(db, [parent])[parent] == "complete", timeout=120)
    with session_scope(db) as s:
        children = s.scalars(select(Task).where(Task.parent_id == parent)).all()
        assert 2 <= len(children) <= get_settings().subplanner_max_children
        assert all(c.status == "complete" and set(c.scope) <= set(scope) for c in children)
        assert sorted(p for c in children for p in c.scope) == sorted(scope)
        assert s.scalars(select(HandoffRecord).where(HandoffRecord.task_id == parent)).all() == []  # it ran no agent
    wait_for(lambda: set(scope) <= set(swarm.git("ls-tree", "-r", "--name-only", "main").splitlines()),
             timeout=60)
    with session_scope(db) as s:  # the feature is done only once every child has landed
        merged = s.scalars(select(MergeAttempt).where(MergeAttempt.status == "merged")
                           .order_by(MergeAttempt.finished_at)).all()
        assert len(merged) == len(children)
        feature = s.get(Feature, "core-001")
        # It changed in the last merge's transaction, after every earlier merge had finished.
        assert feature.status == "done" and feature.updated_at > merged[-2].finished_at
