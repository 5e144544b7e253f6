"""The four prompts, as files under prompts/, rendered from `{{name}}` placeholders.

Variables each prompt takes (every one is required; an unknown one is an error):

- root-planner: features (JSON: pending features with id, title, status, priority, files, acceptance,
  dependencies), file_tree (text), recent_commits (text), in_flight (JSON: open tasks with scope and
  feature_ids), recent_failures (JSON: failed tasks with their error), max_tasks (int).
- subplanner: task (JSON: the task to split), file_tree (text), max_children (int), depth (int),
  max_depth (int).
- worker: agents_md (the target repository's AGENTS.md). The task itself goes in the first user
  message, built by `render_worker_task_message`.
- reconciler: build_output (text: tsc and test output), file_tree (text), open_fixes (JSON: fix tasks
  already open, with their scope), max_tasks (int).

Values that are not strings are rendered as JSON. Substitution is one pass: a value that itself
contains `{{...}}` (build output, source code) is left as it is.

Each prompt's text before the line `<!-- input -->` is the system message; the rest, which holds
the tagged inputs, is the user message (`render_messages`). `render_prompt` returns both, joined.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

PROMPT_NAMES = ("root-planner", "subplanner", "worker", "reconciler")
INPUT_MARKER = "<!-- input -->"
WORKER_TOOLS = ("read_file", "write_file", "edit_file", "list_files", "search", "run", "finish")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_TASK_KEYS = ("id", "attempt", "base_sha", "title", "description", "kind", "priority", "scope", "acceptance", "feature_ids",
              "parent_id", "branch", "context")


class PromptError(ValueError):
    """A prompt that does not exist, or variables that do not match its placeholders."""


def prompts_dir() -> Path:
    """Where the prompt files live: $AGENTSWARM_PROMPTS_DIR, else prompts/ at the repository root."""
    override = os.environ.get("AGENTSWARM_PROMPTS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "prompts"


def list_prompts() -> list[str]:
    """The prompt names, in pipeline order."""
    return list(PROMPT_NAMES)


def _template(name: str) -> str:
    if name not in PROMPT_NAMES:
        raise PromptError(f"unknown prompt {name!r}; expected one of {', '.join(PROMPT_NAMES)}")
    path = prompts_dir() / f"{name}.md"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptError(f"prompt {name!r}: file {path} does not exist (set AGENTSWARM_PROMPTS_DIR?)") from None


def prompt_variables(name: str) -> set[str]:
    """The placeholder names the prompt uses."""
    return set(_PLACEHOLDER.findall(_template(name)))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)


def render_prompt(name: str, **variables: Any) -> str:
    """The whole prompt with every placeholder filled; PromptError names a missing or extra variable."""
    template = _template(name)
    needed = set(_PLACEHOLDER.findall(template))
    missing = sorted(needed - set(variables))
    extra = sorted(set(variables) - needed)
    if missing:
        raise PromptError(f"prompt {name!r}: missing variable(s) {', '.join(missing)}")
    if extra:
        raise PromptError(f"prompt {name!r}: unexpected variable(s) {', '.join(extra)}; it takes {', '.join(sorted(needed))}")
    for key, value in variables.items():
        if value is None:
            raise PromptError(f"prompt {name!r}: variable {key} is None")
    return _PLACEHOLDER.sub(lambda m: _as_text(variables[m.group(1)]), template)


def render_messages(name: str, **variables: Any) -> list[dict[str, str]]:
    """The prompt as chat messages: system (instructions) and, if it has inputs, user (tagged inputs)."""
    text = render_prompt(name, **variables)
    system, sep, user = text.partition(INPUT_MARKER)
    messages = [{"role": "system", "content": system.strip() + "\n"}]
    if sep:
        messages.append({"role": "user", "content": user.strip() + "\n"})
    return messages


def _gate_failure(task: dict) -> str:
    """What failed last time, when the gate sent this task back to its author ("" otherwise)."""
    gate = (task.get("context") or {}).get("gate") if isinstance(task.get("context"), dict) else None
    if not isinstance(gate, dict):
        return ""
    where = "the merge queue's gate" if gate.get("source") == "merge-queue" else "the presubmit checks"
    lines = [f"Your previous attempt at this task failed {where}: the branch did not land. Fix that first."]
    clash = gate.get("clashes_with")
    if isinstance(clash, dict) and clash.get("task_id"):
        lines.append(f"It passes alone but breaks together with task {clash['task_id']} ({clash.get('branch', '')}), "
                     "which is on main now: make your change work with it.")
    elif gate.get("tested_with"):
        lines.append(f"It was tested together with: {', '.join(map(str, gate['tested_with']))}.")
    lines.append(f"<gate_failure>\n{str(gate.get('output') or '').strip()}\n</gate_failure>\n")
    return "\n".join(lines) + "\n"


def render_worker_task_message(task: dict) -> str:
    """The worker's first user message: the task as <task>JSON</task>, with the tools and how to finish."""
    if not isinstance(task, dict):
        raise PromptError(f"worker task must be a dict, got {type(task).__name__}")
    if not (task.get("title") or task.get("description")):
        raise PromptError("worker task needs a title or a description")
    scope = task.get("scope", [])
    if not isinstance(scope, list) or not all(isinstance(p, str) for p in scope):
        raise PromptError("worker task scope must be a list of relative paths")
    shown = {k: task[k] for k in _TASK_KEYS if k in task and task[k] not in (None, "", [], {})}
    if isinstance(shown.get("context"), dict) and "gate" in shown["context"]:  # shown on its own below
        shown["context"] = {k: v for k, v in shown["context"].items() if k != "gate"} or None
        shown = {k: v for k, v in shown.items() if v is not None}
    return (
        "Here is your task.\n\n"
        f"<task>\n{json.dumps(shown, indent=2, ensure_ascii=False)}\n</task>\n\n"
        f"{_gate_failure(task)}"
        f"Tools: {', '.join(WORKER_TOOLS)}. Stay inside the scope: "
        f"{', '.join(scope) if scope else '(none given: touch as few files as you can)'}.\n"
        "Check your work against every acceptance criterion, then call finish exactly once with "
        'status "complete", "blocked" or "failed" and a summary of what you did and what you checked.\n'
    )
