"""Reading a model's task array robustly and validating every task on its own.

A reply may wrap the JSON in a Markdown fence or prose, hold a single object instead of an
array, or an object with a `tasks` list. Every element is checked separately: a bad one is
rejected with its reason and the others go on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from agentswarm.errors import BadRequest, SwarmError

KINDS = frozenset({"feature", "fix"})
MAX_SCOPE_PATHS = 20
MAX_PATH_CHARS = 300
MAX_TITLE_CHARS = 200
MAX_DESCRIPTION_CHARS = 8000
MAX_ACCEPTANCE = 12
MAX_REPLY_CHARS = 1_000_000
MAX_DECODE_STARTS = 64
_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_LIST_KEYS = ("tasks", "children", "subtasks", "items")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidTask(BadRequest):
    """A proposed task (or one of its paths) that breaks a rule; the message says which."""


class UnparseableReply(SwarmError, ValueError):
    """A reply holding no JSON array or object at all."""


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


def _first_json(text: str) -> list[Any] | None:
    """The first list of objects (or wrapped list) found anywhere in the text, else the first list."""
    decoder = json.JSONDecoder()
    fallback: list[Any] | None = None
    starts = [i for i, ch in enumerate(text) if ch in "[{"][:MAX_DECODE_STARTS]  # bounded: no quadratic blow-up
    for i in starts:
        try:
            value, _ = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):  # deep nesting raises RecursionError
            continue
        items = _unwrap(value)
        if items is None:
            continue
        if any(isinstance(x, dict) for x in items):
            return items
        if fallback is None:
            fallback = items
    return fallback


def _unwrap(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            if isinstance(value.get(key), list):
                return value[key]
        if any(k in value for k in ("title", "description", "scope")):
            return [value]
    return None


def extract_items(text: str | None) -> list[Any]:
    """The list of proposals in a reply; UnparseableReply when it holds no usable JSON."""
    if not isinstance(text, str) or not text.strip():
        raise UnparseableReply("empty reply")
    text = _THINK.sub("", text[:MAX_REPLY_CHARS]).strip()
    attempts = [text] + [m.group(1) for m in _FENCE.finditer(text)]
    for candidate in attempts:
        try:
            items = _unwrap(json.loads(candidate))
        except (ValueError, RecursionError):  # deep nesting raises RecursionError
            continue
        if items is not None:
            return items
    items = _first_json(text)
    if items is not None:
        return items
    raise UnparseableReply(f"no JSON array of tasks found in: {_excerpt(text)}")


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
    title = _text(raw, "title", MAX_TITLE_CHARS, required=True)
    description = _text(raw, "description", MAX_DESCRIPTION_CHARS, required=True)
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


def parse_tasks(text: str | None, known_features: Collection[str], limit: int) -> ParseResult:
    """Valid drafts (at most `limit`) and rejections; UnparseableReply when there is no JSON at all."""
    result = ParseResult()
    for i, raw in enumerate(extract_items(text)):
        if len(result.tasks) >= limit:
            result.rejected.append(Rejection(i, f"over the limit of {limit} tasks", _excerpt(raw)))
            continue
        try:
            result.tasks.append(validate_task(raw, known_features))
        except InvalidTask as exc:
            result.rejected.append(Rejection(i, str(exc), _excerpt(raw)))
    return result


def reply_text(content: str | None, tool_arguments: list[str]) -> str | None:
    """The text to parse: the content, or the arguments of a tool call when the content is empty."""
    if content and content.strip():
        return content
    return next((a for a in tool_arguments if a and a.strip()), content)


def _excerpt(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)[: limit + 1]
    return text if len(text) <= limit else text[:limit] + "..."
