"""Reading JSON a model wrote: its common slips repaired, its place in prose found, what survives a cut.

A repair never guesses at structure: it fixes trailing commas, comments, single-quoted strings, Python's
True/False/None and raw line breaks in strings, and anything else stays an error with json's own reason.
A text that ends inside a JSON value (a reply cut by the token limit) gives back only the elements of its
list that were complete. Standard library only: the built-in agent reads tool calls with it in sandboxes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_CANDIDATES = 64  # closed spans tried per text: prose full of brackets cannot make parsing quadratic
_SPECIAL = re.compile(r"[\[\]{}\"'/]")
_DQ = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.S)
_SQ = re.compile(r"'(?:[^'\\]|\\.)*(?:'|\\?\Z)", re.S)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?(?:\*/|\Z)", re.S)
_CLOSE = {"[": "]", "{": "}"}
_JSONISH_AFTER = {"[": "[{\"'-0123456789]tfnTFN", "{": "\"'}"}
_REPAIRABLE = re.compile(
    r'(?P<dq>"(?:[^"\\]|\\.)*")'
    r"|(?P<sq>'(?:[^'\\]|\\.)*')"
    r"|(?P<comment>//[^\n]*|/\*.*?\*/)"
    r"|(?P<comma>,)(?=(?:\s|//[^\n]*|/\*.*?\*/)*[\]}])"
    r"|(?P<word>\b(?:True|False|None)\b)", re.S)
_WORDS = {"True": "true", "False": "false", "None": "null"}
_REPAIR_NAMES = {"sq": "single quotes", "comment": "comments", "comma": "trailing commas", "word": "Python literals"}


class LenientJSONError(ValueError):
    """Text that is not JSON even after the repairs; the message is json's reason for the original text."""


def repair(text: str) -> tuple[str, list[str]]:
    """The text with the common slips fixed, and the names of the fixes made (empty: nothing to fix)."""
    made: set[str] = set()

    def fix(m: re.Match[str]) -> str:
        kind = m.lastgroup or ""
        if kind == "dq":
            return m.group()
        made.add(_REPAIR_NAMES[kind])
        if kind == "sq":
            return json.dumps(_unquote_single(m.group()[1:-1]))
        if kind == "word":
            return _WORDS[m.group()]
        return ""  # a comment or a trailing comma

    fixed = _REPAIRABLE.sub(fix, text)
    return fixed, sorted(made)


def _unquote_single(body: str) -> str:
    """The value of a single-quoted string body: JSON's escapes, plus \\' for a quote."""
    try:
        return json.loads('"' + body.replace("\\'", "'").replace('"', '\\"') + '"', strict=False)
    except ValueError:
        return body


MAX_DEPTH = 500  # far below Python's recursion limit: a parse never runs into it


def _too_deep(text: str) -> bool:
    """Nesting (outside double-quoted strings) deeper than MAX_DEPTH. Checked before parsing: json's
    decoder would recurse to the interpreter's limit, where anything else running at that moment
    (a finalizer, a logging handler) fails too (seen as a CI failure)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def loads(text: str) -> tuple[Any, list[str]]:
    """(value, the repairs it needed); LenientJSONError with json's reason when even the repair fails."""
    if _too_deep(text):
        raise LenientJSONError("nested too deeply")
    try:
        return json.loads(text), []
    except RecursionError:
        raise LenientJSONError("nested too deeply") from None
    except ValueError as exc:
        first = exc
    fixed, made = repair(text)
    try:
        value = json.loads(fixed, strict=False)
    except (ValueError, RecursionError):
        msg = getattr(first, "msg", str(first))
        where = f" at line {first.lineno} column {first.colno}" if isinstance(first, json.JSONDecodeError) else ""
        raise LenientJSONError(f"{msg}{where}") from None
    return value, made or ["line breaks inside strings"]


@dataclass
class Cut:
    """The outermost JSON value the text ends inside of."""

    start: int
    salvage: str | None  # that value with only its complete list elements, closed; None: none were complete
    complete: int  # how many elements of the list were complete


@dataclass
class Scan:
    """Where the JSON values in a text are: closed spans worth decoding, in order, and a cut at the end."""

    spans: list[tuple[int, int]] = field(default_factory=list)
    cut: Cut | None = None


@dataclass
class _Open:
    char: str
    start: int
    jsonish: bool  # opened like JSON (`[{`, `{"`), not a bracket in prose
    in_prose: bool  # it and every bracket around it look like prose: a closed value inside may be the answer
    objects: int = 0  # complete objects directly inside (a list)
    after_object: int = 0  # index just after the last of them
    after_list: int = 0  # (an object) index just after a complete list of objects directly inside


def _jsonish(text: str, i: int) -> bool:
    rest = text[i + 1:i + 64].lstrip()
    return bool(rest) and rest[0] in _JSONISH_AFTER[text[i]]


def _value_position(text: str, i: int) -> bool:
    before = text[max(0, i - 64):i].rstrip()
    return bool(before) and before[-1] in "[{,:"


def scan(text: str) -> Scan:
    """One pass over the text: strings and comments inside brackets skipped, brackets matched."""
    out = Scan()
    stack: list[_Open] = []
    pos, n = 0, len(text)
    while pos < n:
        m = _SPECIAL.search(text, pos)
        if m is None:
            break
        i, ch = m.start(), m.group()
        pos = i + 1
        if ch in "[{":
            jsonish = _jsonish(text, i)
            in_prose = not stack or (stack[-1].in_prose and not stack[-1].jsonish)
            stack.append(_Open(ch, i, jsonish, in_prose))
        elif not stack:
            continue  # prose outside any bracket: quotes and slashes mean nothing
        elif ch == '"' or (ch == "'" and _value_position(text, i)):
            pos = (_DQ if ch == '"' else _SQ).match(text, i).end()  # type: ignore[union-attr]  # \Z always matches
        elif ch == "/":
            comment = _COMMENT.match(text, i)
            if comment:
                pos = comment.end()
        elif ch in "]}":
            closed = stack.pop()  # a mismatched closer still closes: the decode then says what is wrong
            if not stack:
                out.spans.append((closed.start, i + 1))
                continue
            parent = stack[-1]
            if closed.char == "{" and parent.char == "[":
                parent.objects += 1
                parent.after_object = i + 1
            elif closed.char == "[" and parent.char == "{" and closed.objects:
                parent.after_list, parent.objects = i + 1, closed.objects
            if closed.in_prose and len(out.spans) < MAX_CANDIDATES:
                out.spans.append((closed.start, i + 1))
    outer = next((k for k, o in enumerate(stack) if o.jsonish), None)
    if outer is not None:
        out.cut = _salvage(text, stack[outer:])
    out.spans = sorted(out.spans)[:MAX_CANDIDATES]
    return out


def _salvage(text: str, opened: list[_Open]) -> Cut:
    """The outermost open value closed after its list's last complete object (a list, or a list in an object)."""
    top = opened[0]
    if top.char == "[":
        point, closers, complete = top.after_object, "]", top.objects
    elif len(opened) > 1 and opened[1].char == "[" and opened[1].objects:
        point, closers, complete = opened[1].after_object, "]}", opened[1].objects
    else:  # an object whose list of objects closed before the cut
        point, closers, complete = top.after_list, "}", top.objects
    if not point:
        return Cut(top.start, None, 0)
    return Cut(top.start, text[top.start:point] + closers, complete)
