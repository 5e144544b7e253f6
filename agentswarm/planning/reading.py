"""Finding a model's task array in its reply: robustly, and never half-read without saying so.

A reply may wrap the JSON in a Markdown fence or prose, hold a single object instead of an
array, or an object with a `tasks` list. Common JSON slips are repaired (llm.lenient_json); a reply
that cannot be read whole is rejected with the reason, except one cut off inside its JSON (the token
limit), which gives its complete tasks and says where it was cut.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agentswarm.errors import SwarmError
from agentswarm.llm.lenient_json import Cut, LenientJSONError, loads, scan

MAX_REPLY_CHARS = 1_000_000
_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n(.*?)```", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_THINK_OPEN = re.compile(r"<think>.*\Z", re.DOTALL)  # a reply cut off while still thinking
_LIST_KEYS = ("tasks", "children", "subtasks", "items")


class UnparseableReply(SwarmError, ValueError):
    """A reply holding no usable JSON array or object; the message says why."""


@dataclass
class Reading:
    """The proposals found in a reply, and how: repairs made, and the cut when the reply ends inside its JSON."""

    items: list[Any]
    repairs: list[str] = field(default_factory=list)
    cut: str | None = None  # why only part of the reply was read


def _unwrap(value: Any, *, single: bool = True) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            if isinstance(value.get(key), list):
                return value[key]
        if single and any(k in value for k in ("title", "description", "scope")):
            return [value]
    return None


def read_reply(text: str | None) -> Reading:
    """The proposals in a reply; UnparseableReply, with the reason, when it holds no usable JSON.

    Only a whole JSON value counts: an object inside a list that does not decode is never taken for the
    answer. A reply that ends inside its JSON (cut by the token limit) gives its complete tasks, and says so.
    """
    if not isinstance(text, str) or not text.strip():
        raise UnparseableReply("empty reply")
    over = len(text) > MAX_REPLY_CHARS
    text = _THINK_OPEN.sub("", _THINK.sub("", text[:MAX_REPLY_CHARS])).strip()
    if not text:
        raise UnparseableReply("the reply holds only reasoning (<think>): no answer after it")
    for candidate in [text] + [m.group(1) for m in _FENCE.finditer(text)]:
        try:
            items = _unwrap(json.loads(candidate))
        except (ValueError, RecursionError):  # deep nesting raises RecursionError
            continue
        if items is not None:
            return Reading(items)
    found = scan(text)
    fallback: list[Any] | None = None
    broken: str | None = None
    for start, end in found.spans:
        try:
            value, repairs = loads(text[start:end])
        except LenientJSONError as exc:
            if broken is None and _looks_like_tasks(text[start:end]):
                broken = f"the JSON at character {start} is malformed even after repair ({exc})"
            continue
        items = _unwrap(value)
        if items is not None and any(isinstance(x, dict) for x in items):
            return Reading(items, repairs)
        if items is not None and fallback is None:
            fallback = items
    if found.cut is not None:
        items = _salvaged(found.cut)
        where = f"more than {MAX_REPLY_CHARS} characters long: only the start was read" if over else \
            "cut off inside its JSON (the token limit?)"
        if items:
            return Reading(items, cut=f"the reply is {where}; the {len(items)} complete task(s) before the cut "
                                      "were read and the rest dropped")
        if broken is None:
            raise UnparseableReply(f"the reply is {where}, before its first complete task: {_excerpt(text)}")
    if broken is not None:
        raise UnparseableReply(f"{broken}: {_excerpt(text)}")
    if fallback is not None:
        return Reading(fallback)
    raise UnparseableReply(f"no JSON array of tasks found in: {_excerpt(text)}")


def _looks_like_tasks(text: str) -> bool:
    return "{" in text and any(k in text for k in ("title", "description", "scope"))


def _salvaged(cut: Cut) -> list[Any]:
    if cut.salvage is None:
        return []
    try:
        value, _ = loads(cut.salvage)
    except LenientJSONError:
        return []
    return _unwrap(value, single=False) or []  # a lone cut object is not a complete task


def extract_items(text: str | None) -> list[Any]:
    """The list of proposals in a reply; UnparseableReply when it holds no usable JSON."""
    return read_reply(text).items


def _excerpt(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
