"""Token usage of a call: what the server reported, or an estimate from characters where it reported none.

Standard library only: part of the client that runs inside slim sandboxes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

# Estimating tokens when a server reports no usage: code and JSON run 3-4 characters a token, so 3 errs
# towards spending too much, which is the side a budget must err on.
CHARS_PER_TOKEN = 3


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False  # the server reported no usage (or none that can be true): counted from characters

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.estimated or other.estimated)


def _chars(value: Any) -> int:
    if not value:
        return 0
    return len(value) if isinstance(value, str) else len(json.dumps(value))


def prompt_chars(request: dict | None) -> int:
    """Characters of what a chat request asks about: messages (content and tool calls) and the tool schemas."""
    if not isinstance(request, dict):
        return 0
    total = _chars(request.get("tools"))
    for m in request.get("messages") or []:
        if isinstance(m, dict):
            total += _chars(m.get("content")) + _chars(m.get("tool_calls"))
    return total


def estimate_tokens(chars: int) -> int:
    """Tokens in `chars` characters of text, rounded up (CHARS_PER_TOKEN)."""
    return math.ceil(max(0, chars) / CHARS_PER_TOKEN)


def read_usage(raw: Any, request: dict | None, out_chars: int) -> Usage:
    """The reported usage, or an estimate from characters for each count a server left out or reported as 0.

    A prompt is never 0 tokens, nor is a completion that has text: a 0 there means "not counted".
    """
    raw = raw if isinstance(raw, dict) else {}
    prompt, completion = _count(raw.get("prompt_tokens")), _count(raw.get("completion_tokens"))
    estimated = False
    if not prompt:
        prompt, estimated = max(1, estimate_tokens(prompt_chars(request))), True
    if completion is None or (completion == 0 and out_chars):
        completion, estimated = estimate_tokens(out_chars), True
    return Usage(prompt, completion, estimated)


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return None


def completion_chars(message: dict) -> int:
    """Characters a reply message wrote: content, reasoning, tool names and arguments."""
    total = _chars(message.get("content")) + _chars(message.get("reasoning_content") or message.get("reasoning"))
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") if isinstance(tc, dict) else None
        if isinstance(fn, dict):
            total += _chars(fn.get("name")) + _chars(fn.get("arguments"))
    return total
