"""`agentswarm llm-check`: is the configured endpoint usable by a swarm? (models, chat, tool calls)"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentswarm.llm import ChatClient, LLMError

PROBE_TOOL = {"type": "function", "function": {
    "name": "finish", "description": "Report that the task is done.",
    "parameters": {"type": "object", "properties": {"status": {"type": "string"}, "summary": {"type": "string"}},
                   "required": ["status", "summary"]}}}


@dataclass
class CheckLine:
    name: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    lines: list[CheckLine] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(line.ok for line in self.lines)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.lines.append(CheckLine(name, ok, detail))


TOOL_PROBE = [{"role": "system", "content": "You are a coding agent. Call a tool; never answer in prose."},
              {"role": "user", "content": "The task is already done. Call finish with status complete."}]


def check_endpoint(client: ChatClient, model: str, tool_probe: list[dict] | None = None) -> CheckReport:
    """Three probes a swarm relies on; each failure says what to fix.

    `tool_probe`: the messages of the tool-call probe (default TOOL_PROBE; the demo simulator answers only
    messages shaped like an AgentSwarm role's, so `doctor` sends it a worker's).
    """
    report = CheckReport()
    try:
        models = client.models()
        listed = model in models
        report.add("models", True, f"{len(models)} served" + ("" if listed or not models else
                                                              f"; {model!r} not among {models[:5]}"))
    except LLMError as exc:
        report.add("models", False, f"GET /v1/models failed: {exc}")
        return report
    try:
        reply = client.chat([{"role": "user", "content": "Reply with the single word: ready"}], max_tokens=64)
        report.add("chat", bool(reply.content or reply.reasoning),
                   f"{reply.latency_s * 1000:.0f} ms, {reply.usage.prompt_tokens}+{reply.usage.completion_tokens}"
                   f" tokens" + (" (no usage reported: counts are estimated from the texts)" if reply.usage.estimated
                                 else ""))
    except LLMError as exc:
        report.add("chat", False, str(exc))
        return report
    try:
        reply = client.chat(tool_probe or TOOL_PROBE, tools=[PROBE_TOOL], tool_choice="auto", max_tokens=256)
        names = [c.name for c in reply.tool_calls]
        report.add("tool calls", "finish" in names,
                   "the model called finish" if "finish" in names else
                   "no tool call in the reply: the built-in agent needs OpenAI tool calls "
                   "(SGLang: --tool-call-parser; vLLM: --enable-auto-tool-choice --tool-call-parser)")
    except LLMError as exc:
        report.add("tool calls", False, str(exc))
    return report
