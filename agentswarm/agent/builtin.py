"""The built-in coding agent: an OpenAI tool-calling loop over the LLM client, with bounded steps, tokens and time."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from agentswarm.agent.base import AgentContext, AgentOutcome, DeadlineExceeded, load_agents_md
from agentswarm.agent.contract import LLMCallRecord
from agentswarm.agent.shell import clean_env
from agentswarm.agent.tools import TOOL_SCHEMAS, Finish, Toolbox, ToolError
from agentswarm.llm import ChatReply, LLMClient, LLMError, ToolCall

NUDGE = ("You replied without calling a tool. Work on the task with the tools (read_file, write_file, edit_file, "
         "list_files, search, run), and end with finish {status, summary}.")
NO_CHANGES = ("You called finish with status \"complete\", but the repository has no changes. Make the changes the "
              "task asks for, or call finish with status \"blocked\" or \"failed\" and say why.")
UNREADABLE_CALL = ("your tool call could not be read (no tool name in it). Call the tool again with its name and "
                   "a JSON object of arguments.")
CUT_NOTE = ("\n[note: your reply was cut off by the token limit in the middle of this call; write large files in "
            "smaller pieces (write_file a part, then edit_file to add the rest)]")
REPEAT_NOTE = "\n[note: you made this exact call before and got the same result; try something different]"
FALLBACK_PROMPT = """# AgentSwarm worker

You are a coding agent working on one task in a git checkout. Use the tools to read, change and check
the code; touch only the files in the task's scope; end with finish {{status, summary}}. Do not commit or push.

## The repository's own instructions (AGENTS.md)

{agents_md}
"""


def system_prompt(repo: Path) -> str:
    """prompts/worker.md with the target's AGENTS.md; a short built-in prompt if the prompt files are absent."""
    agents_md = load_agents_md(repo)
    try:
        from agentswarm.prompts import PromptError, render_prompt
    except ImportError:
        return FALLBACK_PROMPT.format(agents_md=agents_md)
    try:
        return render_prompt("worker", agents_md=agents_md)
    except PromptError:
        return FALLBACK_PROMPT.format(agents_md=agents_md)


def task_message(task: dict) -> str:
    """The first user message, holding the task as <task>JSON</task>."""
    try:
        from agentswarm.prompts import render_worker_task_message
    except ImportError:
        shown = {k: task.get(k) for k in ("id", "title", "description", "scope", "acceptance", "kind")}
        return f"Here is your task.\n\n<task>\n{json.dumps(shown, indent=2)}\n</task>\n"
    return render_worker_task_message(task)


def has_changes(repo: Path, base: str) -> bool:
    """True if the checkout differs from `base`: uncommitted changes or commits since it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60).stdout.strip()
    return bool(git("status", "--porcelain", "--untracked-files=all") or git("rev-list", f"{base}..HEAD"))


class BuiltinAgent:
    """Drives one model through the tools until it calls finish or a limit is hit."""

    def __init__(self, *, max_nudges: int = 3, repeat_cycles: int = 3, run_timeout_s: float = 120.0,
                 output_cap: int = 32 * 1024) -> None:
        self.max_nudges = max_nudges
        self.repeat_cycles = repeat_cycles
        self.run_timeout_s = run_timeout_s
        self.output_cap = output_cap

    def run(self, ctx: AgentContext) -> AgentOutcome:
        """Run the loop; the outcome is the model's word, which the runner checks against git."""
        spec, tr = ctx.spec, ctx.transcript
        client = LLMClient(spec.llm.base_url, api_key=ctx.api_key, model=spec.llm.model,
                           timeout_s=max(1.0, min(spec.llm.timeout_s, ctx.remaining_s())), max_retries=3)
        tools = Toolbox(ctx.repo, run_env=clean_env({"CI": "1", "GIT_TERMINAL_PROMPT": "0"}),
                        run_timeout_s=self.run_timeout_s, output_cap=self.output_cap)
        messages = [{"role": "system", "content": system_prompt(ctx.repo)},
                    {"role": "user", "content": task_message(spec.to_dict())}]
        for m in messages:
            tr.add(m["role"], content=m["content"])
        loop = _LoopGuard(self.repeat_cycles)
        nudges = 0
        pushed_back = False
        try:
            for step in range(1, spec.limits.max_steps + 1):
                if ctx.remaining_s() <= 0:
                    raise DeadlineExceeded("the agent's time ran out")
                reply = self._call(client, messages, ctx, step)
                if isinstance(reply, AgentOutcome):
                    return reply
                messages.append(reply.assistant_message())
                used = sum(ctx.tokens().values())
                if not reply.tool_calls:
                    nudges += 1
                    if nudges > self.max_nudges:
                        return AgentOutcome("failed", error=f"the model replied {nudges} times in a row without "
                                            "calling a tool", summary=(reply.content or "")[:2000], steps=step)
                    messages.append({"role": "user", "content": NUDGE})
                    tr.add("user", content=NUDGE, nudge=nudges)
                    continue
                nudges = 0
                for call in reply.tool_calls:
                    result = self._tool(tools, call, ctx, cut=reply.finish_reason == "length")
                    if isinstance(result, Finish):
                        if result.status == "complete" and not pushed_back and not has_changes(ctx.repo, spec.base_sha):
                            pushed_back = True
                            result = "Error: " + NO_CHANGES
                        elif result.status == "complete" and (failed := presubmit_failure(ctx)):
                            result = failed
                        else:
                            tr.add("tool", id=call.id, name=call.name, status=result.status, summary=result.summary)
                            _answer_rest(messages, reply.tool_calls, call)
                            return AgentOutcome(result.status, summary=result.summary, steps=step)
                    stuck = loop.seen(call, result)
                    if stuck:
                        _answer_rest(messages, reply.tool_calls, call)
                        return AgentOutcome("failed", error=stuck, steps=step)
                    if loop.repeated_last():
                        result += REPEAT_NOTE
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
                    tr.add("tool", id=call.id, name=call.name, result=result)
                if used >= spec.limits.max_tokens:
                    return AgentOutcome("failed", error=f"token budget exhausted: {used} of "
                                        f"{spec.limits.max_tokens} tokens used without finish", steps=step)
            return AgentOutcome("failed", error=f"step limit reached: {spec.limits.max_steps} model calls "
                                "without finish", steps=spec.limits.max_steps)
        finally:
            client.close()

    def _call(self, client: LLMClient, messages: list[dict], ctx: AgentContext, step: int) -> ChatReply | AgentOutcome:
        spec = ctx.spec
        started = time.monotonic()
        try:
            reply = client.chat(messages, tools=TOOL_SCHEMAS, tool_choice="auto", max_tokens=spec.llm.max_tokens,
                                temperature=spec.llm.temperature)
        except LLMError as exc:
            ctx.llm_calls.append(LLMCallRecord(latency_ms=int((time.monotonic() - started) * 1000),
                                               model=spec.llm.model, ok=False, error=str(exc)[:1000]))
            ctx.transcript.add("llm_error", step=step, error=str(exc))
            return AgentOutcome("failed", error=f"LLM call failed: {exc}", steps=step)
        ctx.llm_calls.append(LLMCallRecord(prompt_tokens=reply.usage.prompt_tokens,
                                           completion_tokens=reply.usage.completion_tokens,
                                           latency_ms=int(reply.latency_s * 1000), model=reply.model or spec.llm.model))
        marks = {k: True for k, on in (("usage_estimated", reply.usage.estimated),
                                        ("tool_calls_from_text", bool(reply.extras.get("tool_calls_from_text")))) if on}
        ctx.transcript.add("assistant", step=step, content=reply.content, reasoning=reply.reasoning,
                           tool_calls=[{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls],
                           finish_reason=reply.finish_reason, prompt_tokens=reply.usage.prompt_tokens,
                           completion_tokens=reply.usage.completion_tokens, latency_ms=int(reply.latency_s * 1000),
                           **marks)
        return reply

    def _tool(self, tools: Toolbox, call: ToolCall, ctx: AgentContext, *, cut: bool = False) -> str | Finish:
        if not call.name:
            return "Error: " + UNREADABLE_CALL
        try:
            args = call.parsed_arguments()
        except ValueError as exc:
            return f"Error: {exc}" + (CUT_NOTE if cut else "")
        try:
            return tools.call(call.name, args, time_left_s=ctx.remaining_s())
        except (ToolError, ValueError) as exc:
            return f"Error: {exc}"
        except OSError as exc:
            return f"Error: {type(exc).__name__}: {exc}"


def presubmit_failure(ctx: AgentContext) -> str | None:
    """The checks' failure to show the agent before its "complete" stands, or None (passed, unavailable, or
    the agent has been shown `max_rounds` failures already: the runner's own check then decides)."""
    pre = ctx.presubmit
    if pre is None or not pre.enabled:
        return None
    shown = sum(1 for r in pre.runs if not r.ok and not r.unavailable)
    if shown >= pre.spec.max_rounds:
        return None
    run = pre.check()
    ctx.transcript.add("note", event="presubmit", ok=run.ok, unavailable=run.unavailable, tree=run.tree,
                       full=run.full, seconds=run.seconds, commands=[c.command for c in run.commands])
    if run.ok or run.unavailable:
        return None
    return run.feedback()


def _answer_rest(messages: list[dict], calls: list[ToolCall], current: ToolCall) -> None:
    # Every tool call needs a result for the history to stay valid, even the ones the loop will not run.
    idx = calls.index(current)
    for c in calls[idx:]:
        messages.append({"role": "tool", "tool_call_id": c.id, "content": "not run: the task ended"})


class _LoopGuard:
    """Spots a block of 1-3 identical (call, result) pairs repeated `cycles` times in a row."""

    def __init__(self, cycles: int) -> None:
        self.cycles = max(2, cycles)
        self.history: list[str] = []

    def seen(self, call: ToolCall, result: str | Finish) -> str | None:
        """Record a call; an error message if the agent is looping."""
        args = call.arguments
        try:
            args = json.dumps(json.loads(args), sort_keys=True)
        except (ValueError, TypeError):
            pass
        digest = hash(str(result))  # compared only within this run (no import of hashlib for it)
        self.history.append(f"{call.name}\0{args}\0{digest:x}")
        for period in (1, 2, 3):
            span = period * self.cycles
            if len(self.history) >= span and self.history[-span:] == self.history[-period:] * self.cycles:
                return (f"stuck in a loop: the same {period} tool call(s) ({call.name} ...) repeated "
                        f"{self.cycles} times with the same results; stopped")
        return None

    def repeated_last(self) -> bool:
        """True if the newest call and result equal the one before."""
        return len(self.history) >= 2 and self.history[-1] == self.history[-2]
