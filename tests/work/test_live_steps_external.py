"""An external agent's steps read from Postgres while it runs: AGENT=pi in an isolated local sandbox, its model
reached through the gate, its JSON events turned into the built-in agent's steps as it prints them."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from sqlalchemy import select

from agentswarm.agent.install import install_pi, tools_dir
from agentswarm.control.taskview import show_task
from agentswarm.db.models import HandoffRecord, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.git.hub import main_sha
from agentswarm.lifecycle.progress import live_transcript
from agentswarm.work.stage import work_on
from tests.support.runs import start
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.node, pytest.mark.bwrap]


@pytest.fixture(scope="module")
def pi_tools() -> str:
    if not shutil.which("npm"):
        pytest.skip("npm is not on PATH")
    try:
        install_pi(tools_dir())
    except Exception as exc:  # no registry access here: say so rather than pass
        pytest.skip(f"pi could not be installed: {exc}")
    return str(tools_dir())


def _pi_model(release: threading.Event):
    """Pi's model: a first command, then (once the test has read the steps) the file, then its last words."""

    def script(body: dict) -> dict:
        if "write" not in {t["function"]["name"] for t in body.get("tools") or []}:
            return {"content": "not a worker call", "tool_calls": []}
        turns = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        if turns == 0:
            return {"content": "Looking first.", "tool_calls": [{"name": "bash", "arguments": {
                "command": "echo live-step-one"}}]}
        if turns == 1:
            release.wait(40)
            return {"content": None, "tool_calls": [{"name": "write", "arguments": {
                "path": "src/live.ts", "content": "export const live = 1;\n"}}]}
        return {"content": "Wrote src/live.ts.", "tool_calls": []}

    return script


def _steps(db: str, task_id: str) -> tuple[TaskStatus, list[dict]]:
    with session_scope(db) as s:
        task = s.get(Task, task_id)
        assert task is not None
        return task.status, [json.loads(line) for line in live_transcript(s, task_id, 1).splitlines()]


def test_pis_steps_are_read_from_postgres_while_its_attempt_is_running(db, redis_client, make_settings, tmp_path,
                                                                       pi_tools) -> None:
    release = threading.Event()
    with FakeLLMServer(script=_pi_model(release)) as llm:
        settings = make_settings(llm_base_url=llm.url, llm_api_key="sk-live-pi-key-0123", agent="pi",
                                 agent_tools_dir=pi_tools, sandbox_root=tmp_path / "sandboxes",
                                 heartbeat_interval_s=0.2, llm_timeout_s=60.0, worker_timeout=180)
        run_id = start(settings)
        with session_scope(db) as s:
            task = Task(run_id=run_id, title="write src/live.ts", description="Create src/live.ts.", kind="manual",
                        scope=["src/live.ts"], branch="x", base_sha=main_sha(settings.hub_path))
            s.add(task)
            s.flush()
            task.branch, task_id = f"swarm/{task.id}", task.id
        outcome: list[str] = []
        worker = threading.Thread(target=lambda: outcome.append(work_on(task_id, settings)), daemon=True)
        worker.start()
        try:
            live = wait_for(lambda: [e for e in _steps(db, task_id)[1] if e["kind"] == "tool" and e["name"] == "bash"],
                            timeout=90, every=0.2)
            status, steps = _steps(db, task_id)
            with session_scope(db) as s:
                view = show_task(s, s.get(Task, task_id))["transcript"]
            still_waiting = not release.is_set() and worker.is_alive()
        finally:
            release.set()
            worker.join(120)
    # Read while Pi waited for its second model call: its first reply and command were already steps.
    assert still_waiting and status == TaskStatus.running
    assert live[0]["result"] == "live-step-one"
    said = next(e for e in steps if e["kind"] == "assistant")
    assert said["content"] == "Looking first." and said["tool_calls"][0]["name"] == "bash" and said["prompt_tokens"] > 0
    assert view["live"] and view["kinds"]["assistant"] >= 1 and view["kinds"]["tool"] >= 1

    assert outcome == ["complete"]
    with session_scope(db) as s:
        handoff = s.scalars(select(HandoffRecord).where(HandoffRecord.task_id == task_id)).one()
    kinds = [e["kind"] for e in map(json.loads, handoff.transcript.splitlines())
             if e["kind"] in ("assistant", "tool") and e.get("name") != "pi"]
    assert kinds == ["assistant", "tool", "assistant", "tool", "assistant"]
    assert handoff.files_changed == ["src/live.ts"]

