"""Validating every task of a model's reply on its own (the reply is read by planning.reading).

Every element is checked separately: a bad one is rejected with its reason and the others go on;
one repeating an earlier one of the same reply is merged into it; a missing title is derived.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from agentswarm.errors import BadRequest
from agentswarm.planning.reading import UnparseableReply, extract_items, read_reply

__all__ = ["InvalidTask", "ParseResult", "Rejection", "TaskDraft", "UnparseableReply", "check_scope_path",
           "extract_items", "parse_tasks", "read_reply", "reply_text", "validate_task"]

KINDS = frozenset({"feature", "fix"})
MAX_SCOPE_PATHS = 20
MAX_PATH_CHARS = 300
MAX_TITLE_CHARS = 200
DERIVED_TITLE_CHARS = 80
MAX_DESCRIPTION_CHARS = 8000
MAX_ACCEPTANCE = 12
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidTask(BadRequest):
    """A proposed task (or one of its paths) that breaks a rule; the message says which."""


@dataclass
class TaskDraft:
    """A validated task proposal, not yet stored."""

    title: str
    description: str
    scope: list[str]
    acceptance: list[str]
    priority: int
    feature_ids: list[str]
    kind: str


@dataclass
class Rejection:
    """One proposal that was dropped, and why."""

    index: int
    reason: str
    excerpt: str


@dataclass
class ParseResult:
    """The valid drafts and the rejected proposals of one reply."""

    tasks: list[TaskDraft] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)  # slips in the reply's JSON that were fixed to read it
    cut: str | None = None  # the reply ended inside its JSON: only its complete tasks were read


def check_scope_path(path: Any) -> str:
    """A normalised scope path, or InvalidTask: relative, inside the repository, not under .git/."""
    if not isinstance(path, str):
        raise InvalidTask(f"scope path must be a string, got {type(path).__name__}")
    p = path.strip()
    if not p:
        raise InvalidTask("scope path is empty")
    if len(p) > MAX_PATH_CHARS:
        raise InvalidTask(f"scope path longer than {MAX_PATH_CHARS} characters")
    if _CONTROL.search(p):
        raise InvalidTask(f"scope path {p!r} contains control characters")
    if "\\" in p:
        raise InvalidTask(f"scope path {p!r} uses backslashes")
    if p.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", p):
        raise InvalidTask(f"scope path {p!r} is absolute")
    parts = [s for s in p.split("/") if s not in ("", ".")]
    if not parts:
        raise InvalidTask(f"scope path {p!r} names the repository root")
    if ".." in parts:
        raise InvalidTask(f"scope path {p!r} leaves the repository")
    if parts[0].lower() == ".git":
        raise InvalidTask(f"scope path {p!r} is inside .git/")
    return "/".join(parts)


def _text(task: dict, key: str, limit: int, *, required: bool) -> str:
    value = task.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidTask(f"missing required field {key!r}")
        return ""
    if not isinstance(value, str):
        raise InvalidTask(f"{key!r} must be a string, got {type(value).__name__}")
    return value.strip()[:limit]


def _str_list(task: dict, key: str, limit: int) -> list[str]:
    value = task.get(key, [])
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidTask(f"{key!r} must be a list of strings, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidTask(f"{key!r} has {len(value)} entries, more than {limit}")
    if not all(isinstance(v, str) for v in value):
        raise InvalidTask(f"{key!r} must be a list of strings")
    return [v.strip() for v in value if v.strip()]


def _priority(value: Any) -> int:
    if value is None:
        return 5
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidTask(f"priority must be an integer 1..10, got {value!r}")
    if not 1 <= int(value) <= 10:
        raise InvalidTask(f"priority {int(value)} is outside 1..10")
    return int(value)


def validate_task(raw: Any, known_features: Collection[str]) -> TaskDraft:
    """Check one proposal; InvalidTask names the first rule it breaks."""
    if not isinstance(raw, dict):
        raise InvalidTask(f"a task must be a JSON object, got {type(raw).__name__}")
    description = _text(raw, "description", MAX_DESCRIPTION_CHARS, required=True)
    title = _text(raw, "title", MAX_TITLE_CHARS, required=False) or title_from(raw.get("name"), description)
    scope_raw = raw.get("scope")
    if not isinstance(scope_raw, list) or not scope_raw:
        raise InvalidTask("'scope' must be a non-empty list of relative paths")
    if len(scope_raw) > MAX_SCOPE_PATHS:
        raise InvalidTask(f"'scope' has {len(scope_raw)} paths, more than {MAX_SCOPE_PATHS}")
    scope = list(dict.fromkeys(check_scope_path(p) for p in scope_raw))
    acceptance = _str_list(raw, "acceptance", MAX_ACCEPTANCE)
    feature_ids = list(dict.fromkeys(_str_list(raw, "feature_ids", 20)))
    unknown = [f for f in feature_ids if f not in known_features]
    if unknown:
        raise InvalidTask(f"unknown feature id(s) {', '.join(unknown)[:200]}")
    kind = raw.get("kind", "feature") or "feature"
    if kind not in KINDS:
        raise InvalidTask(f"kind must be one of {', '.join(sorted(KINDS))}, got {str(kind)[:40]!r}")
    return TaskDraft(title, description, scope, acceptance, _priority(raw.get("priority")), feature_ids, kind)


def title_from(name: Any, description: str) -> str:
    """A title for a proposal that has none: its `name`, else the first sentence of its description."""
    if isinstance(name, str) and name.strip():
        return name.strip()[:MAX_TITLE_CHARS]
    line = next((ln for ln in description.splitlines() if ln.strip(" #*-`>\t")), description)
    first = re.split(r"(?<=[.!?;:])\s", line.strip(" #*-`>\t"), maxsplit=1)[0].rstrip(".;: ")
    if len(first) <= DERIVED_TITLE_CHARS:
        return first
    return first[:DERIVED_TITLE_CHARS].rsplit(" ", 1)[0].rstrip(",;: ") + "..."


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _same_task(a: TaskDraft, b: TaskDraft) -> bool:
    """The same work twice: the same title over the same files (a shared boilerplate description is not)."""
    return sorted(a.scope) == sorted(b.scope) and _key(a.title) == _key(b.title)


def _merge(into: TaskDraft, other: TaskDraft) -> None:
    into.acceptance = list(dict.fromkeys(into.acceptance + other.acceptance))[:MAX_ACCEPTANCE]
    into.feature_ids = list(dict.fromkeys(into.feature_ids + other.feature_ids))
    into.priority = min(into.priority, other.priority)


def parse_tasks(text: str | None, known_features: Collection[str], limit: int) -> ParseResult:
    """Valid drafts (at most `limit`) and rejections; UnparseableReply when there is no usable JSON.

    A proposal repeating an earlier one of the same reply is merged into it; a reply cut inside its JSON
    keeps its complete tasks and adds one rejection saying where it was cut.
    """
    reading = read_reply(text)
    result = ParseResult(repairs=reading.repairs, cut=reading.cut)
    kept_at: list[int] = []
    for i, raw in enumerate(reading.items):
        if len(result.tasks) >= limit:
            result.rejected.append(Rejection(i, f"over the limit of {limit} tasks", _excerpt(raw)))
            continue
        try:
            draft = validate_task(raw, known_features)
        except InvalidTask as exc:
            result.rejected.append(Rejection(i, str(exc), _excerpt(raw)))
            continue
        same = next((k for k, t in enumerate(result.tasks) if _same_task(t, draft)), None)
        if same is not None:
            _merge(result.tasks[same], draft)
            result.rejected.append(Rejection(i, f"repeats task {kept_at[same]} of this reply: merged into it",
                                             _excerpt(raw)))
            continue
        result.tasks.append(draft)
        kept_at.append(i)
    if reading.cut:
        result.rejected.append(Rejection(len(reading.items), reading.cut, _excerpt((text or "")[-300:])))
    return result


def reply_text(content: str | None, tool_arguments: list[str]) -> str | None:
    """The text to parse: the content, or the arguments of a tool call when the content is empty."""
    if content and content.strip():
        return content
    return next((a for a in tool_arguments if a and a.strip()), content)


def _excerpt(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)[: limit + 1]
    return text if len(text) <= limit else text[:limit] + "..."
