"""The built-in agent's loop against the fake LLM over HTTP: what it does when the model misbehaves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agentswarm.agent.base import AgentContext
from agentswarm.agent.builtin import CUT_NOTE, NUDGE, BuiltinAgent, system_prompt
from agentswarm.agent.contract import TaskSpec
from agentswarm.agent.transcript import Transcript
from agentswarm.demo.completions import NO_USAGE
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.faults import Fault
from tests.agent.conftest import git, write_task


def call(name: str, arguments) -> dict:
    return {"name": name, "arguments": arguments}


@pytest.fixture
def make_ctx(tmp_path: Path, hub):
    def make(url: str, llm: dict | None = None, **limits) -> AgentContext:
        repo = tmp_path / "repo"
        git(tmp_path, "clone", "-q", str(hub.path), str(repo))
        over = {"llm": {"base_url": url, "model": "fake-glm", "max_tokens": 512, "temperature": 0.0, "timeout_s": 20,
                        **llm}} if llm else {}
        spec = TaskSpec.load(str(write_task(tmp_path / "sb", hub, url, limits=limits, **over)))
        return AgentContext(spec=spec, repo=repo, deadline=time.monotonic() + 60,
                            transcript=Transcript(tmp_path / "t.jsonl", secrets=[]))
    return make


def test_invalid_arguments_go_back_to_the_model(make_ctx) -> None:
    script = [
        {"content": None, "tool_calls": [call("write_file", '{"path": "NOTES.md", "content": ')]},  # cut JSON
        {"content": None, "tool_calls": [call("write_file", {"path": "NOTES.md"})]},
        {"content": None, "tool_calls": [call("rm_rf", {"path": "."})]},
        {"content": None, "tool_calls": [call("read_file", {"path": "../../etc/passwd"})]},
        {"content": None, "tool_calls": [call("write_file", {"path": "NOTES.md", "content": "ok\n"})]},
        {"content": None, "tool_calls": [call("finish", {"status": "complete", "summary": "done"})]},
    ]
    with FakeLLMServer(script) as llm:
        ctx = make_ctx(llm.url)
        outcome = BuiltinAgent().run(ctx)
        results = [m["content"] for m in llm.requests[-1]["messages"] if m["role"] == "tool"]
    assert outcome.status == "complete" and outcome.summary == "done" and outcome.steps == 6
    assert results[0].startswith("Error: tool call 'write_file': arguments are not valid JSON")
    assert results[1] == "Error: write_file: missing argument(s) content"
    assert results[2].startswith("Error: unknown tool 'rm_rf'")
    assert "'..'" in results[3] and results[3].startswith("Error:")
    assert (ctx.repo / "NOTES.md").read_text() == "ok\n"
    assert len(ctx.llm_calls) == 6 and all(c.ok for c in ctx.llm_calls)


def test_replies_without_a_tool_call_are_nudged_then_given_up(make_ctx) -> None:
    with FakeLLMServer(["I think I will ponder this."] * 10) as llm:
        outcome = BuiltinAgent(max_nudges=3).run(make_ctx(llm.url))
        n = len(llm.requests)
        nudges = [m["content"] for m in llm.requests[-1]["messages"] if m["role"] == "user"][1:]
    assert outcome.status == "failed" and "without calling a tool" in outcome.error
    assert n == 4 and nudges == [NUDGE] * 3


def test_a_nudge_that_works_resets_the_count(make_ctx) -> None:
    script = ["hmm", {"content": None, "tool_calls": [call("write_file", {"path": "a.txt", "content": "1"})]},
              "hmm", "hmm", {"content": None, "tool_calls": [call("finish", {"status": "complete", "summary": "s"})]}]
    with FakeLLMServer(script) as llm:
        outcome = BuiltinAgent(max_nudges=2).run(make_ctx(llm.url))
    assert outcome.status == "complete"


def test_the_same_call_repeated_is_detected_and_stopped(make_ctx) -> None:
    same = {"content": None, "tool_calls": [call("read_file", {"path": "README.md"})]}
    with FakeLLMServer([same] * 10) as llm:
        outcome = BuiltinAgent(repeat_cycles=3).run(make_ctx(llm.url))
        n = len(llm.requests)
        last_result = [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"][-1]["content"]
    assert outcome.status == "failed" and "stuck in a loop" in outcome.error
    assert n == 3 and "same result" in last_result  # the model was warned before it was stopped


def test_a_two_step_cycle_is_detected(make_ctx) -> None:
    a = {"content": None, "tool_calls": [call("list_files", {"path": "src"})]}
    b = {"content": None, "tool_calls": [call("search", {"pattern": "answer"})]}
    with FakeLLMServer([a, b] * 6) as llm:
        outcome = BuiltinAgent(repeat_cycles=3).run(make_ctx(llm.url))
        n = len(llm.requests)
    assert outcome.status == "failed" and "2 tool call(s)" in outcome.error and n == 6


def test_progress_with_the_same_command_is_not_a_loop(make_ctx) -> None:
    script = []
    for i in range(4):  # the same check after each edit: results differ, so it is work, not a loop
        script.append({"content": None, "tool_calls": [call("write_file", {"path": "n.txt", "content": f"{i}\n"})]})
        script.append({"content": None, "tool_calls": [call("run", {"command": "cat n.txt"})]})
    script.append({"content": None, "tool_calls": [call("finish", {"status": "complete", "summary": "s"})]})
    with FakeLLMServer(script) as llm:
        outcome = BuiltinAgent(repeat_cycles=3).run(make_ctx(llm.url, max_steps=20))
    assert outcome.status == "complete"


def test_token_budget_stops_the_loop(make_ctx) -> None:
    costly = {"content": None, "tool_calls": [call("list_files", {})],
              "usage": {"prompt_tokens": 600, "completion_tokens": 100}}
    other = {"content": None, "tool_calls": [call("search", {"pattern": "x"})],
             "usage": {"prompt_tokens": 600, "completion_tokens": 100}}
    with FakeLLMServer([costly, other, costly, other]) as llm:
        ctx = make_ctx(llm.url, max_tokens=1000)
        outcome = BuiltinAgent().run(ctx)
    assert outcome.status == "failed" and "token budget" in outcome.error
    assert ctx.tokens() == {"prompt": 1200, "completion": 200}


def test_transcript_records_calls_results_and_tokens(make_ctx, tmp_path: Path) -> None:
    script = [{"content": "look", "tool_calls": [call("read_file", {"path": "README.md"})],
               "usage": {"prompt_tokens": 11, "completion_tokens": 7}},
              {"content": None, "tool_calls": [call("finish", {"status": "failed", "summary": "could not"})]}]
    with FakeLLMServer(script) as llm:
        ctx = make_ctx(llm.url)
        outcome = BuiltinAgent().run(ctx)
    ctx.transcript.close()
    events = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert events[2]["prompt_tokens"] == 11 and events[2]["tool_calls"][0]["name"] == "read_file"
    assert "line two" in events[3]["result"] and events[5]["status"] == "failed"
    assert outcome.status == "failed" and outcome.summary == "could not"


def test_system_prompt_falls_back_when_the_prompt_files_are_missing(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "AGENTS.md").write_text("House rules: RULE-7.\n")
    monkeypatch.setenv("AGENTSWARM_PROMPTS_DIR", str(tmp_path / "absent"))
    text = system_prompt(tmp_path)
    assert text.startswith("# AgentSwarm worker") and "RULE-7" in text


def test_transcript_is_capped(tmp_path: Path) -> None:
    tr = Transcript(tmp_path / "t.jsonl", cap_bytes=2000, secrets=["hunter2-pw"])
    for i in range(100):
        tr.add("tool", result=f"{i} hunter2-pw " + "x" * 100)
    tr.close()
    text = (tmp_path / "t.jsonl").read_text()
    assert len(text.encode()) <= 2000 + 200 and tr.truncated
    assert json.loads(text.splitlines()[-1])["kind"] == "truncated" and "hunter2-pw" not in text
    inline, cut = tr.inline(cap_bytes=500)
    assert cut and len(inline.encode()) <= 500 and inline.endswith("\n")


# -- replies as real servers send them (issue 17) ---------------------------------------------------

GLM_WRITE = ("Writing the notes.\n<tool_call>write_file\n<arg_key>path</arg_key>\n<arg_value>NOTES.md</arg_value>\n"
             "<arg_key>content</arg_key>\n<arg_value>ok\n</arg_value>\n</tool_call>")
HERMES_FINISH = '<tool_call>\n{"name": "finish", "arguments": {"status": "complete", "summary": "done"}}\n</tool_call>'


def _events(tmp_path: Path, ctx: AgentContext) -> list[dict]:
    ctx.transcript.close()
    return [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]


def test_tool_calls_written_into_the_text_are_run(make_ctx, tmp_path: Path) -> None:
    with FakeLLMServer([GLM_WRITE, HERMES_FINISH]) as llm:  # a server started without a tool-call parser
        ctx = make_ctx(llm.url)
        outcome = BuiltinAgent().run(ctx)
        history = llm.requests[-1]["messages"]
    assert outcome.status == "complete" and outcome.summary == "done" and outcome.steps == 2
    assert (ctx.repo / "NOTES.md").read_text() == "ok\n"
    [said] = [m for m in history if m["role"] == "assistant"]
    assert said["content"] == "Writing the notes." and said["tool_calls"][0]["function"]["name"] == "write_file"
    assert [m["tool_call_id"] for m in history if m["role"] == "tool"] == [said["tool_calls"][0]["id"]]
    assert all(e.get("tool_calls_from_text") for e in _events(tmp_path, ctx) if e["kind"] == "assistant")


def _strict_history(body: dict) -> Fault | None:
    """Recent vLLM: every tool call in the history must carry a JSON object, or the request is refused."""
    for m in body["messages"]:
        for tc in m.get("tool_calls") or []:
            try:
                ok = isinstance(json.loads(tc["function"]["arguments"]), dict)
            except ValueError:
                ok = False
            if not ok:
                return Fault.server_error(400, "tool call arguments in the history are not a JSON object")
    return None


def test_invalid_arguments_keep_the_history_valid_for_a_strict_server(make_ctx) -> None:
    cut = '{"path": "NOTES.md", "content": "a very long fi'
    script = [{"content": None, "tool_calls": [call("write_file", cut)], "finish_reason": "length"},
              {"content": None, "tool_calls": [call("write_file", {"path": "NOTES.md", "content": "ok\n"})]},
              {"content": None, "tool_calls": [call("finish", {"status": "complete", "summary": "done"})]}]
    with FakeLLMServer(script, faults=_strict_history) as llm:
        ctx = make_ctx(llm.url)
        outcome = BuiltinAgent().run(ctx)
        history = llm.requests[-1]["messages"]
    assert outcome.status == "complete" and len(llm.requests) == 3
    first = next(m for m in history if m["role"] == "assistant")
    assert json.loads(first["tool_calls"][0]["function"]["arguments"]) == {"invalid_arguments": cut}
    result = next(m["content"] for m in history if m["role"] == "tool")
    assert "not valid JSON" in result and result.endswith(CUT_NOTE)


def test_replies_without_usage_count_against_the_token_budget(make_ctx, tmp_path: Path) -> None:
    script = [{"content": None, "tool_calls": [call("list_files", {})], "usage": NO_USAGE},
              {"content": None, "tool_calls": [call("search", {"pattern": "x"})], "usage": NO_USAGE}] * 5
    with FakeLLMServer(script) as llm:
        ctx = make_ctx(llm.url, max_tokens=3000)
        outcome = BuiltinAgent().run(ctx)
    assert outcome.status == "failed" and "token budget" in outcome.error  # counted 0 before: it never stopped
    assert sum(ctx.tokens().values()) >= 3000 and outcome.steps < 10
    assert all(e.get("usage_estimated") for e in _events(tmp_path, ctx) if e["kind"] == "assistant")


def test_a_timeout_is_retried(make_ctx) -> None:
    script = [{"content": None, "tool_calls": [call("write_file", {"path": "NOTES.md", "content": "ok\n"})]},
              {"content": None, "tool_calls": [call("finish", {"status": "complete", "summary": "done"})]}]
    with FakeLLMServer(script, faults=[Fault.hang(5)]) as llm:
        ctx = make_ctx(llm.url, llm={"timeout_s": 0.5})
        outcome = BuiltinAgent().run(ctx)
    assert outcome.status == "complete" and len(llm.requests) == 3
    assert len(ctx.llm_calls) == 2 and all(c.ok for c in ctx.llm_calls)
