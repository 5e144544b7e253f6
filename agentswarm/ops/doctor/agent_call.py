"""The chosen agent's tool call round-trips through the model gate, from inside a sandbox, as in a run.

A fresh local sandbox gets the gate's socket and token the way the work stage gives them (work/drive.py's
open_gate and sandbox_env); a probe in it sends one chat request through the runner's loopback bridge,
shaped as the agent sends its own: its tool definitions (Pi's read/bash/edit/write, mini-swe-agent's bash,
the built-in tools), Pi's streaming. The gate routes it to the worker endpoint (the demo model in demo
mode) and records it. The step passes when the gate recorded the call and the answer holds a call of an
offered tool with its required arguments: something the agent could run.
"""

from __future__ import annotations

import json
import os
from typing import Any

from agentswarm.agent.tools import TOOL_SCHEMAS
from agentswarm.config import SandboxBackendName
from agentswarm.llm.endpoints import for_role, load_endpoints
from agentswarm.llm.replies import LLMProtocolError, ToolCall, completion_of_body, to_reply
from agentswarm.sandbox.base import SandboxError
from agentswarm.sandbox.factory import check_backend_for
from agentswarm.work.drive import open_gate, sandbox_env

NAME = "agent tool call"
PROBE_TASK = {"id": "doctor-probe", "title": "doctor probe", "description": "Write NOTES.md saying the doctor was here.",
              "scope": ["NOTES.md"], "acceptance": ["NOTES.md exists"]}
_TASK = f"<task>\n{json.dumps(PROBE_TASK, indent=2)}\n</task>\n\nStart now: call one of your tools."


def _tool(name: str, required: dict[str, Any], optional: dict[str, Any] | None = None, about: str = "") -> dict:
    return {"type": "function", "function": {"name": name, "description": about, "parameters": {
        "type": "object", "required": list(required), "properties": {**required, **(optional or {})}}}}


_STR, _NUM = {"type": "string"}, {"type": "number"}
# What Pi 0.73.1 and mini-swe-agent 2.4.6 send (descriptions shortened).
PI_TOOLS = [
    _tool("read", {"path": _STR}, {"offset": _NUM, "limit": _NUM}, "Read the contents of a file."),
    _tool("bash", {"command": _STR}, {"timeout": _NUM}, "Execute a bash command in the current working directory."),
    _tool("edit", {"path": _STR, "edits": {"type": "array", "items": {
        "type": "object", "required": ["oldText", "newText"], "properties": {"oldText": _STR, "newText": _STR}}}},
          about="Edit a single file using exact text replacement."),
    _tool("write", {"path": _STR, "content": _STR}, about="Write content to a file."),
]
MINI_TOOLS = [_tool("bash", {"command": _STR}, about="Execute a bash command")]

PROBE = r"""
import json, os, sys, urllib.error, urllib.request
from agentswarm.agent.bridge import Bridge
from agentswarm.agent.contract import GATE_SOCKET_ENV, GATE_TOKEN_ENV
bridge = Bridge(os.environ[GATE_SOCKET_ENV]).start()
request = urllib.request.Request(bridge.url + "/v1/chat/completions", data=open(sys.argv[1], "rb").read(),
    method="POST", headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ[GATE_TOKEN_ENV]})
try:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=float(sys.argv[2])) as r:
        print(r.headers.get("Content-Type", ""))
        sys.stdout.write(r.read().decode("utf-8", "replace"))
except urllib.error.HTTPError as exc:
    print(f"the gate answered HTTP {exc.code}: {exc.read().decode('utf-8', 'replace')[:300]}", file=sys.stderr)
    sys.exit(3)
"""


def probe_request(agent: str, model: str, max_tokens: int) -> dict | None:
    """The chat request `agent` would send first, with its own tools; None for an agent of its own (cmd:)."""
    if agent == "pi":
        return {"model": model, "stream": True, "stream_options": {"include_usage": True}, "store": False,
                "max_completion_tokens": max_tokens, "tools": PI_TOOLS, "messages": [
                    {"role": "system", "content": "You are an expert coding assistant operating inside pi, a coding "
                                                  "agent harness. Available tools: read, bash, edit, write."},
                    {"role": "user", "content": [{"type": "text", "text": _TASK}]}]}
    if agent == "mini-swe-agent":
        return {"model": model, "max_tokens": max_tokens, "tools": MINI_TOOLS, "messages": [
            {"role": "system", "content": "You are a helpful assistant that can interact with a computer."},
            {"role": "user", "content": f"Please solve this issue: {_TASK}"}]}
    if agent == "builtin":
        return {"model": model, "max_tokens": max_tokens, "tools": TOOL_SCHEMAS, "tool_choice": "auto", "messages": [
            {"role": "system", "content": "# AgentSwarm worker\nYou are a coding agent. Call a tool; never answer "
                                          "in prose."},
            {"role": "user", "content": _TASK}]}
    return None


def unusable(call: ToolCall, tools: list[dict]) -> str | None:
    """Why the agent could not run `call` with these tools, or None: an offered name, its required arguments."""
    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}
    if call.name not in schemas:
        return f"the model called {call.name!r}, which is not one of the offered tools ({', '.join(schemas)})"
    try:
        args = call.parsed_arguments()
    except ValueError as exc:
        return str(exc)
    missing = [k for k in schemas[call.name].get("required", []) if k not in args]
    return f"the model called {call.name} without its required {', '.join(missing)}" if missing else None


def _upstream_settings(ladder: Any) -> Any:
    """The settings the gate routes by: demo mode's, with the demo model the endpoint steps started."""
    s = ladder.settings
    url = ladder.facts.get("demo_llm_url")
    return s.model_copy(update={"llm_base_url": url}) if s.demo_mode and url else s


def _prerequisites(ladder: Any) -> tuple[str, ...]:
    s = ladder.settings
    if s.demo_mode:
        return "sandbox", "redis", "llm demo chat"
    workers = for_role(load_endpoints(s), "worker")
    return ("sandbox", "redis", *(f"llm {ep.name} chat" for ep in workers[:1]))


def check_agent_call(ladder: Any) -> None:
    """One model call with AGENT's tools, from a sandbox through the model gate, comes back with a usable tool call."""
    s = ladder.settings
    request = probe_request(s.agent, s.llm_model, min(s.llm_max_tokens, 1024))
    if request is None:
        ladder.ok(NAME, f"AGENT={s.agent} brings its own client: not probed")
        return
    if s.sandbox_backend is not SandboxBackendName.local:
        ladder.ok(NAME, "not probed: the model gate serves local sandboxes (a remote one holds the key itself)")
        return
    if not ladder.needs(NAME, *_prerequisites(ladder)):
        return
    upstream = _upstream_settings(ladder)
    timeout_s = min(float(s.llm_timeout_s), 300.0) + 30
    try:
        backend = check_backend_for(s)
        gate = open_gate(backend, upstream)
        assert gate is not None  # a local backend always has one
        with gate:
            sb = backend.create(run_id="doctor", task_id=f"agent-call-{os.getpid()}", attempt=1,
                                env=sandbox_env(upstream, gate, backend.delivery))
            try:
                backend.put_file(sb, "probe.json", json.dumps(request).encode())
                res = backend.exec(sb, ["python", "-c", PROBE, "probe.json", str(timeout_s - 10)], timeout_s=timeout_s)
            finally:
                backend.terminate(sb)
        calls = list(gate.calls)
    except (SandboxError, ValueError) as exc:
        ladder.fail(NAME, f"the probe could not run in a sandbox: {exc}", "see the sandbox step above")
        return
    _judge(ladder, request, res, calls)


def _judge(ladder: Any, request: dict, res: Any, calls: list) -> None:
    agent, tools = ladder.settings.agent, request["tools"]
    offered = f"{agent}'s tools ({', '.join(t['function']['name'] for t in tools)})"
    fix = "check the `llm` steps above; `agentswarm llm-check` probes the endpoint alone"
    if res.exit_code != 0 or res.timed_out:
        why = (res.stderr.strip() or res.stdout.strip() or f"exit {res.exit_code}").splitlines()[-1]
        ladder.fail(NAME, f"a call with {offered} did not come back through the model gate: {why[:300]}", fix)
        return
    if len(calls) != 1 or not calls[0].ok:
        ladder.fail(NAME, f"the model gate recorded {len(calls)} call(s) for one request "
                          f"({calls[-1].error if calls else 'none'})", fix)
        return
    content_type, _, body = res.stdout.partition("\n")
    try:
        reply = to_reply(completion_of_body(body.encode(), content_type), 0.0, ladder.settings.llm_model,
                         lambda text: text, request=request)
    except LLMProtocolError as exc:
        ladder.fail(NAME, f"the answer to a call with {offered} is not a completion: {exc}", fix)
        return
    if not reply.tool_calls:
        ladder.fail(NAME, f"the model answered a call with {offered} without a tool call: "
                          f"{(reply.content or '')[:200]!r}",
                    "serve the model with tool calls on: SGLang --tool-call-parser (glm45 for GLM), vLLM "
                    "--enable-auto-tool-choice --tool-call-parser")
        return
    call = reply.tool_calls[0]
    why = unusable(call, tools)
    if why:
        ladder.fail(NAME, f"a call with {offered}: {why}", "use a model that follows tool schemas (see docs/models.md)")
        return
    args = json.dumps(call.parsed_arguments(), ensure_ascii=False)
    ladder.ok(NAME, f"{offered} → {call.name} {args[:80]}{'…' if len(args) > 80 else ''}; through the model gate "
                    f"from a sandbox, recorded with {calls[0].prompt_tokens}+{calls[0].completion_tokens} tokens")
