"""The worker runner as a real subprocess against the fake LLM over HTTP and a real bare hub."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from agentswarm.demo.fake_llm import FakeLLMServer
from tests.agent.conftest import (
    SECRET_KEY,
    assert_no_secrets,
    git,
    run_runner,
    start_runner,
    write_task,
)


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


EDIT_TWO_FILES = [
    {"content": "Reading first.", "tool_calls": [call("read_file", path="src/index.ts")]},
    {"content": None, "tool_calls": [
        call("edit_file", path="src/index.ts", old="answer = 41", new="answer = 42"),
        call("write_file", path="NOTES.md", content="# Notes\n\none\ntwo\nthree\n"),
    ]},
    {"content": None, "tool_calls": [call("run", command="git status --short", timeout_s=20)]},
    {"content": None, "tool_calls": [call("finish", status="complete", summary="answer is 42; notes added")]},
]


def test_scripted_task_edits_commits_pushes_and_measures_from_git(tmp_path: Path, hub) -> None:
    with FakeLLMServer(EDIT_TWO_FILES) as llm:
        task = write_task(tmp_path / "sb", hub, llm.url)
        code, result, err = run_runner(task)
        requests = llm.requests
        headers = llm.request_headers
    assert code == 0, (result, err)
    assert result["status"] == "complete" and result["error"] is None
    head = hub.branch_sha("swarm/t1")
    assert head == result["head_sha"]
    assert result["commits"] == git(hub.path, "rev-list", "--reverse", f"{hub.base}..{head}").split()
    assert len(result["commits"]) == 1
    stats = hub.numstat(hub.base, head)
    assert result["files_changed"] == [p for _a, _d, p in stats] == ["NOTES.md", "src/index.ts"]
    assert result["insertions"] == sum(a for a, _d, _p in stats) == 6
    assert result["deletions"] == sum(d for _a, d, _p in stats) == 1
    assert git(hub.path, "show", f"{head}:src/index.ts") == "export const answer = 42;"
    # The commit carries the runner's identity and a message derived from the task.
    assert git(hub.path, "log", "-1", "--format=%cn <%ce>|%s", head) == \
        "AgentSwarm Worker <worker@agentswarm.local>|feature: Bump the answer"
    assert hub.branch_sha("main") == hub.base  # only its own branch moved
    # Tokens and calls travel in the handoff, one record per model request.
    assert len(result["llm_calls"]) == len(requests) == 4
    assert result["tokens"]["prompt"] == sum(c["prompt_tokens"] for c in result["llm_calls"]) > 0
    assert all(h.get("Authorization") == f"Bearer {SECRET_KEY}" for h in headers)
    # The model saw the worker prompt with AGENTS.md, the task, and real tool results.
    first = requests[0]["messages"]
    assert first[0]["content"].startswith("# AgentSwarm worker") and "AGENTS-MARKER-42" in first[0]["content"]
    assert "<task>" in first[1]["content"]
    tool_results = [m["content"] for m in requests[3]["messages"] if m["role"] == "tool"]
    assert "export const answer = 41;" in tool_results[0]
    assert any("M src/index.ts" in r and "?? NOTES.md" in r for r in tool_results)
    # The transcript is on disk beside result.json and inline, and holds no secret.
    on_disk = (tmp_path / "sb" / "transcript.jsonl").read_text()
    kinds = [json.loads(line)["kind"] for line in on_disk.splitlines()]
    assert kinds.count("assistant") == 4 and kinds.count("tool") == 5 and kinds[-1] == "outcome"
    assert result["transcript"] == on_disk and result["transcript_truncated"] is False
    clone_config = (tmp_path / "sb" / "repo" / ".git" / "config").read_text()
    assert_no_secrets(json.dumps(result), on_disk, clone_config, err)


def test_second_attempt_replaces_the_branch_of_an_earlier_one(tmp_path: Path, hub) -> None:
    first = [{"content": None, "tool_calls": [call("write_file", path="NOTES.md", content="first\n")]},
             {"content": None, "tool_calls": [call("finish", status="complete", summary="first")]}]
    second = [{"content": None, "tool_calls": [call("write_file", path="NOTES.md", content="second\nattempt\n")]},
              {"content": None, "tool_calls": [call("finish", status="complete", summary="second")]}]
    with FakeLLMServer(first) as llm:
        code1, r1, _ = run_runner(write_task(tmp_path / "a1", hub, llm.url))
    with FakeLLMServer(second) as llm:
        code2, r2, err = run_runner(write_task(tmp_path / "a2", hub, llm.url))
    assert (code1, code2) == (0, 0), err
    assert r1["head_sha"] != r2["head_sha"] == hub.branch_sha("swarm/t1")
    assert r2["insertions"] == 2 and r2["files_changed"] == ["NOTES.md"]


def test_complete_without_changes_is_blocked_not_a_success(tmp_path: Path, hub) -> None:
    lazy = [{"content": None, "tool_calls": [call("finish", status="complete", summary="all done")]}] * 2
    with FakeLLMServer(lazy) as llm:
        code, result, _ = run_runner(write_task(tmp_path / "sb", hub, llm.url))
        pushback = llm.requests[1]["messages"][-1]["content"]
    assert code == 2 and result["status"] == "blocked"
    assert "no changes" in result["error"] and result["commits"] == [] and result["head_sha"] == hub.base
    assert "has no changes" in pushback  # the model was told once before its word was refused
    assert hub.branch_sha("swarm/t1") is None


def test_model_that_never_finishes_stops_at_the_step_limit(tmp_path: Path, hub) -> None:
    counter = iter(range(1000))

    def wanders(_body: dict) -> dict:
        return {"content": None, "tool_calls": [call("list_files", path="src" if next(counter) % 2 else ".")]}

    with FakeLLMServer(wanders) as llm:
        code, result, _ = run_runner(write_task(tmp_path / "sb", hub, llm.url, limits={"max_steps": 5}))
        n = len(llm.requests)
    assert code == 1 and result["status"] == "failed"
    assert "step limit" in result["error"] and n == 5 and len(result["llm_calls"]) == 5


def test_sigterm_leaves_a_failed_handoff(tmp_path: Path, hub) -> None:
    script = [{"content": None, "tool_calls": [call("run", command="sleep 30", timeout_s=60)]}]
    with FakeLLMServer(script) as llm:
        task = write_task(tmp_path / "sb", hub, llm.url)
        proc = start_runner(task)
        deadline = time.monotonic() + 20
        while not llm.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the tool start its sleep
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    result = json.loads((tmp_path / "sb" / "result.json").read_text())
    assert proc.returncode == 1
    assert result["status"] == "failed" and result["error"] == "killed by SIGTERM"
    assert result["task_id"] == "t1" and len(result["llm_calls"]) == 1


def test_llm_server_errors_end_in_a_failed_handoff(tmp_path: Path, hub) -> None:
    def broken(_body: dict) -> dict:
        raise RuntimeError("model backend exploded")

    with FakeLLMServer(broken) as llm:
        code, result, _ = run_runner(write_task(tmp_path / "sb", hub, llm.url))
    assert code == 1 and result["status"] == "failed"
    assert "LLM call failed" in result["error"] and result["llm_calls"][-1]["ok"] is False


def test_deadline_stops_the_agent_and_still_writes_the_handoff(tmp_path: Path, hub) -> None:
    script = [{"content": None, "tool_calls": [call("write_file", path="NOTES.md", content="partial\n")]},
              {"content": None, "tool_calls": [call("run", command="sleep 60", timeout_s=120)]}]
    with FakeLLMServer(script) as llm:
        started = time.monotonic()
        code, result, _ = run_runner(write_task(tmp_path / "sb", hub, llm.url, limits={"timeout_s": 8}))
    assert time.monotonic() - started < 12
    assert code == 1 and result["status"] == "failed" and "timed out" in result["error"]
    # The partial work was still committed and pushed, measured from git.
    assert result["files_changed"] == ["NOTES.md"] and hub.branch_sha("swarm/t1") == result["head_sha"]


def test_bad_task_json_is_a_runner_error_with_a_handoff(tmp_path: Path, hub) -> None:
    task = write_task(tmp_path / "sb", hub, "http://127.0.0.1:9", kind="nonsense")
    code, result, _ = run_runner(task)
    assert code == 3 and result["status"] == "failed" and result["task_id"] == "t1"
    assert "task.kind" in result["error"]


def test_unreachable_hub_is_a_runner_error(tmp_path: Path, hub) -> None:
    task = write_task(tmp_path / "sb", hub, "http://127.0.0.1:9", repo_url=str(tmp_path / "nowhere.git"))
    code, result, _ = run_runner(task)
    assert code == 3 and result["status"] == "failed" and "clone" in result["error"]


def test_the_swarm_simulator_drives_the_builtin_agent_end_to_end(tmp_path: Path, hub) -> None:
    with FakeLLMServer() as llm:  # no script: the simulator plays the worker from the <task> section
        code, result, err = run_runner(write_task(tmp_path / "sb", hub, llm.url))
    assert code == 0, (result["error"], err)
    assert result["files_changed"] == ["NOTES.md", "src/index.ts"] and result["status"] == "complete"
    assert hub.numstat(hub.base, result["head_sha"]) and hub.branch_sha("swarm/t1") == result["head_sha"]


def test_bundle_delivery_clones_the_given_bundle_and_hands_back_a_bundle_not_a_push(tmp_path: Path, hub) -> None:
    """A sandbox that cannot reach the hub (Modal): repo.bundle in, out.bundle back; the orchestrator takes it in."""
    from agentswarm.git.intake import bundle_of_branches, import_bundle, measure

    task_dir = tmp_path / "sb"
    task_dir.mkdir()
    bundle_of_branches(hub.path, task_dir / "repo.bundle")
    with FakeLLMServer(EDIT_TWO_FILES) as llm:
        task = write_task(task_dir, hub, llm.url, delivery="bundle", repo_url="/nowhere/hub.git")
        code, result, err = run_runner(task)
    assert code == 0, (result, err)
    assert hub.branch_sha("swarm/t1") is None  # nothing was pushed
    head = import_bundle(hub.path, task_dir / "out.bundle", "swarm/t1", hub.base)
    assert head == result["head_sha"] == hub.branch_sha("swarm/t1")
    found = measure(hub.path, hub.base, head)
    assert found.commits == result["commits"] and found.files_changed == ["NOTES.md", "src/index.ts"]
    # Files and lines of a bundle are the orchestrator's to count (work/drive.py): the runner spends no git on them.
    assert (result["files_changed"], result["insertions"], result["deletions"]) == ([], 0, 0)


PRESUBMIT = {"commands": ["! grep -q broken src/index.ts"], "full_commands": [], "full_paths": [], "install": "",
             "timeout_s": 30, "max_rounds": 2}
BREAK_THEN_FIX = [
    {"content": None, "tool_calls": [call("edit_file", path="src/index.ts", old="answer = 41", new="answer = broken")]},
    {"content": None, "tool_calls": [call("finish", status="complete", summary="done")]},
    {"content": None, "tool_calls": [call("edit_file", path="src/index.ts", old="answer = broken", new="answer = 42")]},
    {"content": None, "tool_calls": [call("finish", status="complete", summary="fixed what presubmit showed")]},
]


def test_presubmit_shows_the_agent_its_failure_and_the_fixed_branch_completes(tmp_path: Path, hub) -> None:
    with FakeLLMServer(BREAK_THEN_FIX) as llm:
        code, result, err = run_runner(write_task(tmp_path / "sb", hub, llm.url, presubmit=PRESUBMIT))
        shown = [m["content"] for m in llm.requests[2]["messages"] if m["role"] == "tool"][-1]
    assert code == 0 and result["status"] == "complete", (result, err)
    assert shown.startswith("Error: presubmit failed") and "grep -q broken" in shown
    assert [r["ok"] for r in result["presubmit"]] == [False, True]  # the committed tree was not checked twice
    assert git(hub.path, "show", f"{result['head_sha']}:src/index.ts") == "export const answer = 42;"


def test_a_branch_that_still_fails_presubmit_is_handed_back_failed_with_the_output(tmp_path: Path, hub) -> None:
    stubborn = BREAK_THEN_FIX[:2] + [BREAK_THEN_FIX[1]] * 3
    with FakeLLMServer(stubborn) as llm:
        code, result, err = run_runner(write_task(tmp_path / "sb", hub, llm.url,
                                                  presubmit={**PRESUBMIT, "max_rounds": 1}))
        calls = len(llm.requests)
    assert result["status"] == "failed" and result["error"].startswith("Error: presubmit failed"), (result, err)
    assert calls == 3  # shown once (max_rounds 1), then its finish stood and the runner's own check decided
    assert [r["ok"] for r in result["presubmit"]] == [False]
    assert result["commits"] and result["head_sha"]  # the work is still measured and handed back
