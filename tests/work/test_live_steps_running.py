"""A real attempt (the work stage, a local sandbox, the built-in agent, the fake LLM over HTTP) whose steps are
read from Postgres while it still runs; once it hands off, its live pieces are gone and the handoff holds all."""

from __future__ import annotations

import json
import threading

from sqlalchemy import func, select

from agentswarm.control.taskview import follow_transcript
from agentswarm.db.models import HandoffRecord, LiveStep, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.simulator import simulate
from agentswarm.git.hub import main_sha
from agentswarm.lifecycle.progress import live_transcript, transcript_of
from agentswarm.work.stage import work_on
from tests.support.runs import start
from tests.support.waiting import wait_for

KEY = "sk-live-steps-orchestrator-key-0123"


def _worker_script(release: threading.Event):
    """A worker that looks around, then waits for the test before it writes its file and finishes."""

    def script(body: dict) -> dict:
        msgs = body["messages"]
        if not any(m.get("role") == "system" and m["content"].startswith("# AgentSwarm worker") for m in msgs):
            return simulate(body)
        done = len([m for m in msgs if m.get("role") == "tool"])
        if done == 0:  # the model repeats the orchestrator's key: the tail must scrub it
            return {"content": f"Looking first ({KEY}).",
                    "tool_calls": [{"name": "run", "arguments": {"command": "echo live-step-one && ls"}}]}
        if done == 1:
            release.wait(25)  # the attempt stays running until the test has read its steps
            return {"content": None, "tool_calls": [{"name": "write_file", "arguments": {
                "path": "src/live.ts", "content": "export const live = 1;\n"}}]}
        return {"content": None, "tool_calls": [{"name": "finish", "arguments": {
            "status": "complete", "summary": "wrote src/live.ts"}}]}

    return script


def _state(db: str, task_id: str) -> tuple[TaskStatus, str]:
    with session_scope(db) as s:
        task = s.get(Task, task_id)
        assert task is not None
        return task.status, live_transcript(s, task_id, 1)


def _kinds(text: str) -> list[str]:
    return [json.loads(line)["kind"] for line in text.splitlines()]


def test_an_agents_steps_are_read_from_postgres_while_its_attempt_is_running(db, redis_client, make_settings,
                                                                            tmp_path) -> None:
    release = threading.Event()
    with FakeLLMServer(script=_worker_script(release)) as llm:
        settings = make_settings(llm_base_url=llm.url, llm_api_key=KEY, sandbox_root=tmp_path / "sandboxes",
                                 heartbeat_interval_s=0.2, llm_timeout_s=60.0, worker_timeout=120)
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
        followed: list[str] = []  # `agentswarm logs <prefix> --follow --raw`, from the first step to the end
        follower = threading.Thread(target=lambda: followed.extend(follow_transcript(
            task_id[:6], follow=True, raw=True, interval_s=0.1, idle_limit_s=60)), daemon=True)
        try:
            wait_for(lambda: _state(db, task_id)[0] == TaskStatus.running, timeout=20, every=0.05)
            follower.start()
            wait_for(lambda: "tool" in _kinds(_state(db, task_id)[1]), timeout=20, every=0.1)
            wait_for(lambda: "tool" in _kinds("\n".join(followed)), timeout=5, every=0.1)
            status, text = _state(db, task_id)
            with session_scope(db) as s:
                seen = transcript_of(s, task_id)
            still_waiting = not release.is_set() and worker.is_alive()
        finally:
            release.set()
            worker.join(60)
            follower.join(30)
    # Read while the attempt ran: the agent was blocked on its next model call the whole time.
    assert still_waiting and status == TaskStatus.running
    assert {"system", "user", "assistant", "tool"} <= set(_kinds(text))
    tool = next(json.loads(line) for line in text.splitlines() if json.loads(line)["kind"] == "tool")
    assert tool["name"] == "run" and "live-step-one" in tool["result"]
    assert KEY not in text and "***" in text
    assert seen == (1, text, True)

    assert outcome == ["complete"]
    with session_scope(db) as s:
        left = s.scalar(select(func.count()).select_from(LiveStep).where(LiveStep.task_id == task_id))
        handoff = s.scalars(select(HandoffRecord).where(HandoffRecord.task_id == task_id)).one()
        after = transcript_of(s, task_id)
    assert left == 0  # the handoff holds the whole transcript now
    assert handoff.attempt == 1 and "live-step-one" in handoff.transcript and KEY not in handoff.transcript
    assert _kinds(handoff.transcript).count("assistant") == 3 and after == (1, handoff.transcript, False)
    # The follower printed the live steps as they came, then the rest from the handoff, each line once, and stopped
    # by itself when the task ended.
    assert not follower.is_alive() and followed == handoff.transcript.splitlines()
