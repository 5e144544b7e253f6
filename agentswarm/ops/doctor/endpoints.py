"""Every LLM endpoint: its models, a chat (with its latency) and a tool call in the OpenAI shape.

The probes are `agentswarm llm-check`'s (`ops.llm_check.check_endpoint`). In demo mode (no endpoint
configured) the demo model is started the way `make swarm` starts it (`agentswarm fake-llm --port N`) and
probed the same way, its tool call asked for as a worker asks; it stays up for the smoke run, if any.
Keys are read from the variables the endpoints name, used for the probes, and never printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from agentswarm.llm import LLMClient
from agentswarm.llm.endpoints import load_endpoints
from agentswarm.ops.doctor.ladder import shown_url, stop_process
from agentswarm.ops.llm_check import check_endpoint

DEMO_START_S = 20
DEMO_TOOL_PROBE = [
    {"role": "system", "content": "# AgentSwarm worker\nYou are a coding agent. Call a tool; never answer in prose."},
    {"role": "user", "content": '<task>{"id": "doctor-probe", "title": "doctor probe", "scope": []}</task>\n'
                                "The task is already done. Call finish."},
]
PROBE_STEPS = {"models": "models", "chat": "chat", "tool calls": "tool call"}


@dataclass(frozen=True)
class Target:
    """What one endpoint is probed with (the key only in memory, never shown)."""

    name: str
    base_url: str
    model: str
    key: str | None
    key_env: str
    timeout_s: float


def configured(settings: Any) -> list[Target]:
    """Every endpoint of LLM_ENDPOINTS / LLM_ENDPOINTS_FILE, or LLM_BASE_URL as `default`."""
    found = []
    for ep in load_endpoints(settings):
        timeout = (ep.timeout_s or settings.llm_timeout_s) + ep.cold_start_s
        found.append(Target(ep.name, ep.base_url, ep.model, ep.key(settings), ep.key_env, timeout))
    return found


def start_demo_model(ladder: Any) -> str | None:
    """`agentswarm fake-llm` on a free port, as `make swarm` runs it; its URL, or None after a failed step."""
    from agentswarm.ops.swarm import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LLM_BASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "agentswarm", "fake-llm", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    ladder.resources.callback(_stop, proc)
    client = LLMClient(url, None, ladder.settings.llm_model, timeout_s=5, max_retries=0)
    deadline = time.monotonic() + DEMO_START_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            client.models()
            return url
        except Exception:  # noqa: BLE001  (not listening yet)
            time.sleep(0.2)
    why = proc.stderr.read().decode(errors="replace")[-300:] if proc.poll() is not None and proc.stderr else ""
    ladder.fail("llm demo", f"`agentswarm fake-llm --port {port}` did not answer in {DEMO_START_S}s {why}".strip(),
                "run `agentswarm fake-llm` by hand to see why")
    return None


def _stop(proc: subprocess.Popen) -> None:
    stop_process(proc)
    if proc.stderr:
        proc.stderr.close()


def check_endpoints(ladder: Any) -> None:
    """Three probes per endpoint; the demo model's when none is configured."""
    s = ladder.settings
    if s.demo_mode:
        url = start_demo_model(ladder)
        if url is None:
            return
        ladder.facts["demo_llm_url"] = url
        _probe(ladder, Target("demo", url, s.llm_model, None, "", 30.0), demo=True)
        return
    targets = configured(s)
    for target in targets:
        ladder.add_secret(target.key)
    for target in targets:
        _probe(ladder, target, demo=False)


def _probe(ladder: Any, t: Target, *, demo: bool) -> None:
    where = "the demo simulator" if demo else f"{shown_url(t.base_url)} ({t.model})"
    with LLMClient(t.base_url, t.key, t.model, timeout_s=t.timeout_s, max_retries=1) as client:
        report = check_endpoint(client, t.model, DEMO_TOOL_PROBE if demo else None)
    done = set()
    for line in report.lines:
        name = f"llm {t.name} {PROBE_STEPS.get(line.name, line.name)}"
        done.add(line.name)
        if line.ok:
            ladder.ok(name, f"{where}: {line.detail}")
        else:
            ladder.fail(name, f"{where}: {line.detail}", _fix(line.name, line.detail, t, demo))
    for probe in PROBE_STEPS:
        if probe not in done:
            ladder.skip(f"llm {t.name} {PROBE_STEPS[probe]}", "the probe before it failed")


def _fix(probe: str, detail: str, t: Target, demo: bool) -> str:
    if demo:
        return "the demo simulator is part of agentswarm: reinstall it (`make install`) and see `agentswarm fake-llm`"
    source = "LLM_BASE_URL" if t.name == "default" else f"the base_url of endpoint {t.name!r} in LLM_ENDPOINTS"
    if " 401" in detail or " 403" in detail:
        return (f"the endpoint refused the key: put its key in {t.key_env}" if t.key_env else
                f"the endpoint wants a key: name the variable holding it in {t.name!r}'s key_env")
    if probe == "models":
        return f"start the server, or correct {source}; `agentswarm llm-check` probes it alone"
    if probe == "chat":
        return ("the server lists models but the chat failed: check the model name (LLM_MODEL or the entry's "
                "model) against the ids it serves")
    return ("serve the model with tool calls on: SGLang --tool-call-parser (glm45 for GLM), vLLM "
            "--enable-auto-tool-choice --tool-call-parser")
