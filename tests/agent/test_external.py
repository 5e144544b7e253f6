"""External agent drivers: a shell-template agent, mini-swe-agent (from PyPI) and Pi (from npm) against the fake LLM."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import threading
from pathlib import Path

import pytest

from agentswarm.agent.external import external_agent
from agentswarm.agent.install import install_mini, install_pi, tools_dir
from agentswarm.demo.fake_llm import FakeLLMServer
from tests.agent.conftest import SECRET_KEY, assert_no_secrets, git, run_runner, start_runner, write_task
from tests.support.waiting import wait_for

# A tiny "agent CLI": asks the model (through the env the driver sets) what to write, writes it, exits.
TINY_AGENT = r"""
import json, os, sys, urllib.request
prompt = open(os.environ["AGENTSWARM_PROMPT_FILE"]).read()
req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", method="POST",
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"},
    data=json.dumps({"model": os.environ["OPENAI_MODEL"], "messages": [{"role": "user", "content": prompt}]}).encode())
reply = json.load(urllib.request.urlopen(req))["choices"][0]["message"]["content"]
open("NOTES.md", "w").write(reply + "\n")
seen = {k: os.environ.get(k, "") for k in ("LLM_API_KEY", "GIT_TOKEN")}
print("tiny agent wrote NOTES.md; saw", json.dumps(seen), "prompt has task:", "<task>" in prompt)
"""


def test_cmd_agent_runs_with_llm_env_and_its_work_is_harvested(tmp_path: Path, hub) -> None:
    script = tmp_path / "tiny_agent.py"
    script.write_text(TINY_AGENT)
    reply = {"content": "hello from the model", "tool_calls": [], "usage": {"prompt_tokens": 50, "completion_tokens": 5}}
    with FakeLLMServer([reply]) as llm:
        task = write_task(tmp_path / "sb", hub, llm.url, agent=f"cmd:{shlex.quote(sys.executable)} {script}")
        code, result, err = run_runner(task)
        headers = llm.request_headers
    assert code == 0, (result, err)
    assert result["status"] == "complete" and result["files_changed"] == ["NOTES.md"] and result["insertions"] == 1
    assert git(hub.path, "show", f"{result['head_sha']}:NOTES.md") == "hello from the model"
    # The proxy put the real key on the upstream call; the agent itself saw neither secret.
    assert headers[0]["Authorization"] == f"Bearer {SECRET_KEY}"
    events = [json.loads(line) for line in result["transcript"].splitlines()]
    output = next(e["result"] for e in events if e["kind"] == "tool" and e["name"] == "cmd")
    assert 'saw {"LLM_API_KEY": "", "GIT_TOKEN": ""} prompt has task: True' in output
    assert result["llm_calls"] == [{"prompt_tokens": 50, "completion_tokens": 5, "latency_ms": result["llm_calls"][0]["latency_ms"],
                                    "model": "fake-glm", "ok": True, "error": None, "endpoint": "",
                                    "started_at": result["llm_calls"][0]["started_at"], "usage_estimated": False}]
    assert result["tokens"] == {"prompt": 50, "completion": 5}
    assert_no_secrets(json.dumps(result), (tmp_path / "sb" / "transcript.jsonl").read_text())


def test_a_reply_without_usage_is_counted_by_estimate_through_the_proxy(tmp_path: Path, hub) -> None:
    """A server that reports no usage: the proxy estimates the tokens from the texts, so budgets still hold."""
    from agentswarm.demo.completions import NO_USAGE

    script = tmp_path / "tiny_agent.py"
    script.write_text(TINY_AGENT)
    reply = {"content": "hello from the model " * 20, "tool_calls": [], "usage": NO_USAGE}
    with FakeLLMServer([reply]) as llm:
        code, result, err = run_runner(write_task(tmp_path / "sb", hub, llm.url,
                                                  agent=f"cmd:{shlex.quote(sys.executable)} {script}"))
    assert code == 0, (result, err)
    [call] = result["llm_calls"]
    assert call["ok"] and call["prompt_tokens"] > 100 and call["completion_tokens"] >= 100 // 3
    assert result["tokens"] == {"prompt": call["prompt_tokens"], "completion": call["completion_tokens"]}


def test_crashing_agent_leaves_a_failed_handoff(tmp_path: Path, hub) -> None:
    crash = "cmd:echo partial > NOTES.md; echo 'Traceback: boom' >&2; kill -SEGV $$"
    with FakeLLMServer([]) as llm:
        code, result, _ = run_runner(write_task(tmp_path / "sb", hub, llm.url, agent=crash))
    assert code == 1 and result["status"] == "failed"
    assert "exited -11" in result["error"] and "Traceback: boom" in result["error"]
    assert result["files_changed"] == ["NOTES.md"]  # partial work is measured from git, not lost


def test_agent_can_report_blocked_through_the_status_file(tmp_path: Path, hub) -> None:
    agent = """cmd:printf '{"status": "blocked", "summary": "needs src/world.ts"}' > {status_file}"""
    with FakeLLMServer([]) as llm:
        code, result, _ = run_runner(write_task(tmp_path / "sb", hub, llm.url, agent=agent))
    assert code == 2 and result["status"] == "blocked" and result["summary"] == "needs src/world.ts"


PRESUBMIT = {"commands": ["! grep -q broken src/index.ts"], "full_commands": [], "full_paths": [], "install": "",
             "timeout_s": 30, "max_rounds": 2}
# Breaks the file on its first start; fixes it once its prompt carries the gate's failure.
BREAK_THEN_FIX = ("cmd:if grep -q '<presubmit_failure>' {prompt_file}; then "
                  "grep -o 'grep -q broken' {prompt_file} | head -n1 > SEEN.txt; "
                  "sed -i 's/answer = broken/answer = 42/' src/index.ts; "
                  "else sed -i 's/answer = 41/answer = broken/' src/index.ts; fi")


def test_presubmit_failure_reaches_the_external_agents_prompt_and_it_fixes_the_branch(tmp_path: Path, hub) -> None:
    with FakeLLMServer([]) as llm:
        code, result, err = run_runner(write_task(tmp_path / "sb", hub, llm.url, agent=BREAK_THEN_FIX,
                                                  presubmit=PRESUBMIT))
    assert code == 0 and result["status"] == "complete", (result, err)
    assert [r["ok"] for r in result["presubmit"]] == [False, True]
    assert git(hub.path, "show", f"{result['head_sha']}:src/index.ts") == "export const answer = 42;"
    assert git(hub.path, "show", f"{result['head_sha']}:SEEN.txt") == "grep -q broken"  # the output was shown
    events = [json.loads(line) for line in result["transcript"].splitlines()]
    assert sum(1 for e in events if e.get("event") == "external_start") == 2
    assert any(e.get("presubmit_feedback") for e in events if e["kind"] == "user")


def test_a_branch_that_keeps_failing_presubmit_is_handed_back_failed(tmp_path: Path, hub) -> None:
    always_broken = "cmd:sed -i 's/answer = 41/answer = broken/' src/index.ts"
    with FakeLLMServer([]) as llm:
        code, result, _ = run_runner(write_task(tmp_path / "sb", hub, llm.url, agent=always_broken,
                                                presubmit=PRESUBMIT))
    assert result["status"] == "failed" and "presubmit failed" in result["error"], result
    events = [json.loads(line) for line in result["transcript"].splitlines()]
    assert sum(1 for e in events if e.get("event") == "external_start") == 3  # the first start and two rounds


def test_unknown_agent_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown agent"):
        external_agent("claude-in-a-box")


@pytest.fixture(scope="session")
def mini_bin() -> Path:
    try:
        return install_mini(tools_dir())
    except Exception as exc:  # no registry access here: say so rather than pass
        pytest.skip(f"mini-swe-agent could not be installed: {exc}")


def bash(command: str) -> dict:
    return {"content": "Next step.", "tool_calls": [{"name": "bash", "arguments": {"command": command}}]}


def test_mini_swe_agent_from_pypi_commits_through_the_driver(tmp_path: Path, hub, mini_bin: Path) -> None:
    script = [
        bash("sed -i 's/answer = 41/answer = 42/' src/index.ts && printf 'a\\nb\\n' > NOTES.md"),
        bash("git status --short"),
        bash("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"),
    ]
    with FakeLLMServer(script) as llm:
        task = write_task(tmp_path / "sb", hub, llm.url, agent="mini-swe-agent")
        code, result, err = run_runner(task, timeout=120, AGENTSWARM_MINI_BIN=str(mini_bin))
        requests = llm.requests
        headers = llm.request_headers
    assert code == 0, (result["error"], err[-2000:])
    assert result["status"] == "complete"
    assert len(requests) == 3 and requests[0]["tools"][0]["function"]["name"] == "bash"
    assert "<task>" in requests[0]["messages"][1]["content"]
    assert all(h["Authorization"] == f"Bearer {SECRET_KEY}" for h in headers)
    stats = hub.numstat(hub.base, result["head_sha"])
    assert result["files_changed"] == [p for *_x, p in stats] == ["NOTES.md", "src/index.ts"]
    assert (result["insertions"], result["deletions"]) == (3, 1)
    assert hub.branch_sha("swarm/t1") == result["head_sha"]
    assert len(result["llm_calls"]) == 3 and result["tokens"]["prompt"] > 0
    assert_no_secrets(json.dumps(result))
    # Its trajectory became the built-in agent's steps: each bash call, its output, the model's tokens.
    events = [json.loads(line) for line in result["transcript"].splitlines()]
    said = [e for e in events if e["kind"] == "assistant"]
    assert [json.loads(e["tool_calls"][0]["arguments"])["command"] for e in said] == [
        s["tool_calls"][0]["arguments"]["command"] for s in script]
    assert all(e["tool_calls"][0]["name"] == "bash" and e["prompt_tokens"] > 0 for e in said)
    ran = [e for e in events if e["kind"] == "tool" and e["name"] == "bash"]
    assert len(ran) == 2 and ran[1]["result"] == " M src/index.ts\n?? NOTES.md\n" and ran[1]["exit_code"] == 0
    assert any(e.get("event") == "agent_exit" and e["exit_status"] == "Submitted" for e in events)  # the submit


@pytest.fixture(scope="session")
def pi_bin() -> Path:
    if not shutil.which("npm"):
        pytest.skip("npm is not on PATH")
    try:
        return install_pi(tools_dir())
    except Exception as exc:  # no registry access here: say so rather than pass
        pytest.skip(f"pi could not be installed: {exc}")


def _events(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except (OSError, ValueError):
        return []


def test_pis_steps_reach_the_transcript_while_it_runs(tmp_path: Path, hub, pi_bin: Path) -> None:
    """Pi's JSON events become steps as it prints them: its first command and output are in transcript.jsonl
    while its next model call is still waiting."""
    release = threading.Event()

    def pi_model(body: dict) -> dict:
        turns = sum(1 for m in body["messages"] if m.get("role") == "assistant")
        if turns == 0:
            return bash("echo live-step-one")
        if turns == 1:
            release.wait(60)
            return bash("sed -i 's/answer = 41/answer = 42/' src/index.ts")
        return {"content": "Done: the answer is 42.", "tool_calls": []}

    with FakeLLMServer(pi_model) as llm:
        task = write_task(tmp_path / "sb", hub, llm.url, agent="pi")
        proc = start_runner(task, AGENTSWARM_PI_BIN=str(pi_bin))
        try:
            live = wait_for(lambda: [e for e in _events(tmp_path / "sb" / "transcript.jsonl")
                                     if e["kind"] == "tool" and "live-step-one" in e.get("result", "")],
                            timeout=60, every=0.1)
            assert proc.poll() is None  # the attempt is still running
        finally:
            release.set()
        _out, err = proc.communicate(timeout=120)
    result = json.loads((tmp_path / "sb" / "result.json").read_text())
    assert proc.returncode == 0 and result["status"] == "complete", (result["error"], err[-2000:])
    assert result["summary"] == "Done: the answer is 42."
    assert live[0]["name"] == "bash" and live[0]["result"] == "live-step-one"
    events = [json.loads(line) for line in result["transcript"].splitlines()]
    said = [e for e in events if e["kind"] == "assistant"]
    assert [[c["name"] for c in e["tool_calls"]] for e in said] == [["bash"], ["bash"], []]
    assert all(e["prompt_tokens"] > 0 and e["completion_tokens"] > 0 for e in said)
    assert said[-1]["content"] == "Done: the answer is 42." and said[-1]["finish_reason"] == "stop"
    assert [e["kind"] for e in events if e["kind"] in ("assistant", "tool") and e.get("name") != "pi"] == [
        "assistant", "tool", "assistant", "tool", "assistant"]
    assert_no_secrets(json.dumps(result))
