"""`agentswarm doctor`'s agent steps: the chosen external agent is installed and answers inside a sandbox, and one
model call with its tools round-trips through the model gate from a sandbox (the fake LLM over HTTP upstream)."""

from __future__ import annotations

import json
import shutil

import pytest

from agentswarm.agent.install import install_agent, tools_dir
from agentswarm.agent.tools import TOOL_SCHEMAS
from agentswarm.config import load_settings
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.simulator import simulate
from agentswarm.ops.doctor import agent, agent_call, endpoints, sandboxes, services
from tests.ops.test_doctor import run_steps

pytestmark = [pytest.mark.bwrap, pytest.mark.integration]


def _steps(tmp_path, **overrides):
    settings = load_settings(sandbox_root=tmp_path / "sandboxes", **overrides)
    return run_steps(settings, sandboxes.check_backend, agent.check_agent)


def test_an_agent_missing_from_the_tools_cache_fails_with_the_install_command(tmp_path):
    ladder, lines = _steps(tmp_path, agent="pi", agent_tools_dir=tmp_path / "empty-tools")
    assert lines[-1].startswith("✗ agent") and "not installed" in lines[-1] and "make agents" in lines[-1], lines
    assert not ladder.passed


def test_the_builtin_agent_needs_nothing(tmp_path):
    ladder, lines = _steps(tmp_path, agent="builtin")
    assert ladder.passed and "nothing to install" in lines[-1]


@pytest.mark.parametrize("name", ["mini-swe-agent", "pi"])
def test_an_installed_agent_reports_its_version_from_inside_a_sandbox(tmp_path, name):
    if name == "pi" and not shutil.which("npm"):
        pytest.skip("npm is not on PATH")
    try:
        install_agent(name, tools_dir())
    except Exception as exc:  # no registry access here: say so rather than pass
        pytest.skip(f"{name} could not be installed: {exc}")
    ladder, lines = _steps(tmp_path, agent=name)
    assert ladder.passed, lines
    assert "answers inside a sandbox" in lines[-1] and ("2.4.6" if name == "mini-swe-agent" else "0.73.1") in lines[-1]


KEY = "sk-doctor-agent-call-never-in-a-sandbox-42"
OFFERED = {"pi": {"read", "bash", "edit", "write"}, "mini-swe-agent": {"bash"},
           "builtin": {t["function"]["name"] for t in TOOL_SCHEMAS}}


def model(body: dict):
    """The simulator, which answers whatever tools a request offers; and the endpoint step's own probe."""
    if [t["function"]["name"] for t in body.get("tools") or []] == ["finish"]:
        return {"content": None, "tool_calls": [{"name": "finish", "arguments": {"status": "complete", "summary": "ok"}}]}
    return simulate(body)


def _call_steps(tmp_path, llm, name):
    settings = load_settings(agent=name, llm_base_url=llm.url, llm_api_key=KEY, sandbox_root=tmp_path / "sandboxes")
    return run_steps(settings, services.check_redis, sandboxes.check_backend, endpoints.check_endpoints,
                     agent_call.check_agent_call)


@pytest.mark.parametrize("name", ["pi", "mini-swe-agent", "builtin"])
def test_one_call_with_the_agents_tools_round_trips_through_the_model_gate(tmp_path, redis_client, name):
    with FakeLLMServer(model) as llm:
        ladder, lines = _call_steps(tmp_path, llm, name)
        sent, headers = llm.requests[-1], llm.request_headers[-1]
    assert ladder.passed, lines
    line = lines[-1]
    assert line.startswith("✓ agent tool call") and "through the model gate from a sandbox, recorded with" in line
    assert {t["function"]["name"] for t in sent["tools"]} == OFFERED[name]  # the agent's own tool definitions
    assert bool(sent.get("stream")) is (name == "pi")  # Pi streams; the gate passes the stream through
    assert "<task>" in json.dumps(sent["messages"])
    assert headers["Authorization"] == f"Bearer {KEY}"  # the gate added the key; the sandbox held only its token
    called = line.split("→ ", 1)[1].split(" ", 1)[0]
    assert called in OFFERED[name], line
    if name != "builtin":
        assert called == "bash" and '{"command": "' in line  # the simulator's first step: write the scope
    assert KEY not in "\n".join(lines)


def test_a_model_that_answers_the_agents_tools_in_prose_fails_the_step_with_the_fix(tmp_path, redis_client):
    def prose_for_pi(body: dict):
        if {t["function"]["name"] for t in body.get("tools") or []} == OFFERED["pi"]:
            return {"content": "I would start by reading the files.", "tool_calls": []}
        return model(body)

    with FakeLLMServer(prose_for_pi) as llm:
        ladder, lines = _call_steps(tmp_path, llm, "pi")
    assert not ladder.passed and lines[-1].startswith("✗ agent tool call"), lines
    assert "without a tool call: 'I would start by reading the files.'" in lines[-1]
    assert "→ fix: serve the model with tool calls on" in lines[-1]


def test_the_call_waits_for_the_model_and_a_cmd_agent_is_not_probed(tmp_path):
    settings = load_settings(agent="pi", llm_base_url="http://127.0.0.1:9/v1", sandbox_root=tmp_path / "sandboxes")
    _ladder, lines = run_steps(settings, agent_call.check_agent_call)
    assert lines == ["– agent tool call  skipped: needs `sandbox`, which did not run"]
    _ladder, lines = run_steps(load_settings(agent="cmd:true", sandbox_root=tmp_path), agent_call.check_agent_call)
    assert lines[-1].startswith("✓ agent tool call") and "brings its own client: not probed" in lines[-1]
