"""The simulated worker for external agents (mini-swe-agent, Pi): the same files, through their bash tool.

An external agent brings its own system prompt, so no AgentSwarm role line; it is recognised by the
<task> section of render_external_prompt and a `bash` tool among the offered ones. Invariant: the
scope's files are the built-in worker's (sim_files), so an external run lands the same features.
Turns, decided from the number of assistant messages alone: write the scope in one bash command,
`git status --short`, then end (mini: its submit sentinel; Pi: a final answer without tool calls).
With fault rates, the first start may write a fault (`Sim-Fault:` trailer); started again with a
<presubmit_failure> in its prompt, it writes the scope cleanly (`Sim-Fixed:`), as the built-in worker does.
"""

from __future__ import annotations

import json
import shlex
from pathlib import PurePosixPath

from agentswarm.demo.sim_faults import FIXED_TRAILER, PAIR_TRAILER, TRAILER, worker_fault
from agentswarm.demo.sim_files import (
    ENTRY_PATHS,
    entry_add_command,
    fault_snippet,
    fault_target,
    file_content,
    pair_key,
    shared_add_command,
    shared_undo_command,
)

MINI_SUBMIT = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"
MAX_FILES = 4


def offered_tools(body: dict) -> set[str]:
    """Names of the tools the request offers."""
    return {str((t.get("function") or {}).get("name")) for t in body.get("tools") or [] if isinstance(t, dict)}


def task_of(body: dict) -> dict | None:
    """The <task> JSON of the first user message that has one, else None."""
    for m in body.get("messages") or []:
        text = m.get("content") if isinstance(m, dict) else None
        if isinstance(text, list):
            text = " ".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
        if isinstance(text, str) and "<task>" in text and "</task>" in text:
            try:
                found = json.loads(text[text.index("<task>") + 6:text.index("</task>")])
            except json.JSONDecodeError:
                return None
            return found if isinstance(found, dict) else None
    return None


def is_external_worker(body: dict) -> bool:
    return "bash" in offered_tools(body) and task_of(body) is not None


def write_command(scope: list[str], title: str, fault: str | None = None, task_id: str = "",
                  pair: str | None = None) -> str:
    """One shell command that writes every file of the scope (the entry module by appending a line),
    with `fault` written into its target file."""
    target = fault_target(fault, scope) if fault else None
    parts = []
    for path in scope:
        if path in ENTRY_PATHS:
            parts.append(entry_add_command(path, title))
            continue
        parent = str(PurePosixPath(path).parent)
        if parent != ".":
            parts.append(f"mkdir -p {shlex.quote(parent)}")
        content = file_content(path, title, scope)
        if fault and path == target:
            content += fault_snippet(fault, path, title, task_id, pair)
        parts.append(f"printf '%s' {shlex.quote(content)} > {shlex.quote(path)}")
    if fault == "shared":
        parts.append(shared_add_command(task_id, title))
    return " && ".join(parts)


def _prompt_text(body: dict) -> str:
    return "\n".join(str(m.get("content")) for m in body.get("messages") or []
                     if isinstance(m, dict) and m.get("role") == "user")


def _bash(command: str, content: str) -> dict:
    return {"content": content, "tool_calls": [{"name": "bash", "arguments": {"command": command}}]}


def work_external(body: dict, faults: dict[str, float] | None = None, fault_attempts: int = 0) -> dict:
    """The next turn of a simulated external agent (see the module's docstring)."""
    task = task_of(body) or {}
    title = str(task.get("title") or task.get("description") or "task")[:100]
    scope = [str(p) for p in task.get("scope") or []][:MAX_FILES]
    task_id = str(task.get("id") or title)
    fault = worker_fault(faults, task_id, 1, scope, fault_attempts)
    pair = pair_key(None, task_id)
    fixing = "<presubmit_failure>" in _prompt_text(body)
    turns = sum(1 for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "assistant")
    summary = f"Implemented '{title}': wrote {', '.join(scope) or 'nothing'}."
    if fault:
        summary += f"\n\n{FIXED_TRAILER if fixing else TRAILER}: {fault}"
        if fault == "semantic":
            summary += f"\n{PAIR_TRAILER}: {pair}"
    pi = {"read", "write", "edit"} <= offered_tools(body)
    if turns == 0 and scope:
        command = write_command(scope, title, None if fixing else fault, task_id, pair)
        if fixing and fault == "shared":
            command += " && " + shared_undo_command()
        return _bash(command, f"{'Rewriting' if fixing else 'Writing'} {len(scope)} file(s) for '{title}'.")
    if turns <= 1 and scope:
        return _bash("git status --short", "Checking what changed.")
    if pi:
        return {"content": summary, "tool_calls": []}
    return _bash(f"echo {MINI_SUBMIT} && printf '%s\\n' {shlex.quote(summary)}", "Done: submitting.")
