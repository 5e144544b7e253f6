"""An external agent's own record, read while it runs, as the built-in agent's transcript steps.

Pi (`--mode json`) prints one JSON event a line on stdout; mini-swe-agent rewrites its trajectory file
(`{"messages": [...]}`) after every step. Both become the steps the built-in agent writes: `assistant`
(content, reasoning, tool_calls [{id, name, arguments}], finish_reason, prompt_tokens, completion_tokens)
and `tool` (id, name, result), so the live view, `agentswarm logs` and the dashboard show them alike.

Invariant: reading is best effort and bounded. A line or file that is not what is expected (unknown
event, cut short, not JSON, a half-written file) is skipped and never raises; a line longer than
LINE_CAP is left out without being held in memory, and so are Pi's streaming events (message_update
and the like, each a copy of the message so far), recognised by their first bytes. Standard library only.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from agentswarm.agent.transcript import Transcript

Step = tuple[str, dict[str, Any]]  # (kind, fields) for Transcript.add

LINE_CAP = 2 * 1024 * 1024
TRAJECTORY_CAP = 32 * 1024 * 1024
POLL_S = 1.0
_HEAD = 64  # bytes enough to read a Pi event's type
_PI_TYPE = re.compile(rb'^\s*\{"type":"([A-Za-z_]+)"')
_PI_WANTED = {b"message_end", b"auto_retry_start", b"compaction_start"}


class StepSource(Protocol):
    """Turns what an agent CLI writes into steps: fed its output as it comes (b"" on idle ticks)."""

    def feed(self, chunk: bytes) -> list[Step]: ...

    def finish(self) -> list[Step]: ...


def _text(parts: Any, kind: str = "text", key: str = "text") -> str:
    """The `key` of each content part of type `kind`, joined (a plain string is its own text)."""
    if isinstance(parts, str):
        return parts if kind == "text" else ""
    if not isinstance(parts, list):
        return ""
    return "\n".join(str(p.get(key) or "") for p in parts if isinstance(p, dict) and p.get("type") == kind).strip()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _args(value: Any) -> str:
    """Tool-call arguments as the built-in agent stores them: a JSON string."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


class Lines:
    """Whole lines out of a byte stream; lines over `cap`, or that `keep(head)` refuses, are dropped unheld
    (one over `cap` leaves a None in its place)."""

    def __init__(self, cap: int = LINE_CAP, keep: Any = None) -> None:
        self.cap, self.keep = cap, keep
        self.buf = bytearray()
        self.skipping = False  # inside a dropped line: drop bytes up to its newline

    def feed(self, chunk: bytes) -> list[bytes | None]:
        out: list[bytes | None] = []
        while chunk:
            newline = chunk.find(b"\n")
            piece, chunk = (chunk, b"") if newline < 0 else (chunk[:newline], chunk[newline + 1:])
            if not self.skipping:
                self.buf += piece
                if self.keep is not None and len(self.buf) >= _HEAD and not self.keep(bytes(self.buf[:_HEAD])):
                    self._drop()
                elif len(self.buf) > self.cap:
                    out.append(None)
                    self._drop()
            if newline >= 0:
                if not self.skipping and self.buf.strip():
                    out.append(bytes(self.buf))
                self.buf.clear()
                self.skipping = False
        return out

    def _drop(self) -> None:
        self.buf.clear()
        self.skipping = True

    def rest(self) -> bytes:
        """The last line when the stream ended without a newline (possibly cut short)."""
        rest = b"" if self.skipping else bytes(self.buf)
        self.buf.clear()
        return rest


def _pi_wanted(head: bytes) -> bool:
    found = _PI_TYPE.match(head)
    return found is None or found.group(1) in _PI_WANTED  # not Pi's shape: read it whole, then judge


class PiSteps:
    """Steps from Pi's `--mode json` stdout: each message_end of an assistant or a tool result, and retries."""

    def __init__(self, cap: int = LINE_CAP) -> None:
        self.lines = Lines(cap, keep=_pi_wanted)
        self.calls = 0

    def feed(self, chunk: bytes) -> list[Step]:
        return [s for line in self.lines.feed(chunk) if (s := self.step(line)) is not None]

    def finish(self) -> list[Step]:
        rest = self.lines.rest()
        step = self.step(rest) if rest.strip() else None
        return [step] if step is not None else []

    def step(self, line: bytes | None) -> Step | None:
        """One event line as a step, None when it is not one (or not JSON at all)."""
        if line is None:
            return "note", {"event": "steps_unread", "note": f"a pi event over {self.lines.cap} bytes"}
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        if kind == "auto_retry_start":
            return "note", {"event": "agent_retry", "attempt": event.get("attempt"),
                            "error": str(event.get("errorMessage") or "")[:2000]}
        if kind == "compaction_start":
            return "note", {"event": "agent_compaction", "reason": str(event.get("reason") or "")}
        message = event.get("message") if kind == "message_end" else None
        if not isinstance(message, dict):
            return None
        if message.get("role") == "assistant":
            return self._assistant(message)
        if message.get("role") == "toolResult":
            fields: dict[str, Any] = {"id": str(message.get("toolCallId") or ""),
                                      "name": str(message.get("toolName") or "?"),
                                      "result": _text(message.get("content"))}
            if message.get("isError"):
                fields["is_error"] = True
            return "tool", fields
        return None  # the prompt (already recorded), and Pi's own kinds

    def _assistant(self, message: dict) -> Step:
        self.calls += 1
        content = message.get("content")
        calls = [{"id": str(p.get("id") or ""), "name": str(p.get("name") or ""), "arguments": _args(p.get("arguments"))}
                 for p in content if isinstance(p, dict) and p.get("type") == "toolCall"] \
            if isinstance(content, list) else []
        usage = _dict(message.get("usage"))
        prompt = _int(usage.get("input")) + _int(usage.get("cacheRead")) + _int(usage.get("cacheWrite"))
        fields: dict[str, Any] = {
            "step": self.calls, "content": _text(content) or None, "reasoning": _text(content, "thinking", "thinking")
            or None, "tool_calls": calls, "finish_reason": message.get("stopReason"), "prompt_tokens": prompt,
            "completion_tokens": _int(usage.get("output"))}
        if message.get("errorMessage"):
            fields["error"] = str(message["errorMessage"])[:2000]
        return "assistant", fields


class MiniSteps:
    """Steps from mini-swe-agent's trajectory file, re-read (at most every `poll_s`) when it has changed."""

    def __init__(self, path: Path, *, poll_s: float = POLL_S, cap: int = TRAJECTORY_CAP) -> None:
        self.path, self.poll_s, self.cap = path, poll_s, cap
        self.seen = 0  # messages already turned into steps
        self.calls = 0
        self.names: dict[str, str] = {}  # tool call id -> tool name
        self.users = 0
        self._read_at = 0.0
        self._stat: tuple[int, int] | None = None
        self._too_big = False

    def feed(self, chunk: bytes) -> list[Step]:
        if time.monotonic() - self._read_at < self.poll_s:
            return []
        return self.poll()

    def finish(self) -> list[Step]:
        return self.poll()

    def poll(self) -> list[Step]:
        """The steps of the messages added since the last read (none while the file is absent or half written)."""
        self._read_at = time.monotonic()
        try:
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) == self._stat:
                return []
            if st.st_size > self.cap:
                if self._too_big:
                    return []
                self._too_big = True
                return [("note", {"event": "steps_unread", "note": f"the trajectory is over {self.cap} bytes"})]
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return []  # not there yet, or caught mid-write: the next read sees it whole
        self._stat = (st.st_mtime_ns, st.st_size)
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list):
            return []
        new, self.seen = messages[self.seen:], max(self.seen, len(messages))
        return [s for m in new if isinstance(m, dict) and (s := self.step(m)) is not None]

    def step(self, m: dict) -> Step | None:
        """One trajectory message as a step; None for the system prompt and the task."""
        role = m.get("role")
        extra = _dict(m.get("extra"))
        if role == "assistant":
            return self._assistant(m, extra)
        if role == "tool" or (role == "user" and ("returncode" in extra or "raw_output" in extra)):
            call_id = str(m.get("tool_call_id") or "")
            output = extra.get("raw_output")
            fields: dict[str, Any] = {"id": call_id, "name": self.names.get(call_id, "bash"),
                                      "result": output if isinstance(output, str) else _text(m.get("content"))}
            if isinstance(extra.get("returncode"), int):
                fields["exit_code"] = extra["returncode"]
            return "tool", fields
        if role == "user":
            self.users += 1
            return ("user", {"content": _text(m.get("content"))}) if self.users > 1 else None  # the first: the task
        if role == "exit":
            return "note", {"event": "agent_exit", "exit_status": str(extra.get("exit_status") or ""),
                            "summary": str(extra.get("submission") or m.get("content") or "")[:2000]}
        return None

    def _assistant(self, m: dict, extra: dict) -> Step:
        self.calls += 1
        calls = []
        for c in m.get("tool_calls") or []:
            fn = c.get("function") if isinstance(c, dict) else None
            if isinstance(fn, dict):
                calls.append({"id": str(c.get("id") or ""), "name": str(fn.get("name") or ""),
                              "arguments": _args(fn.get("arguments"))})
        if not calls:  # a text-based config: the commands it parsed from the reply
            calls = [{"id": str(a.get("tool_call_id") or ""), "name": "bash",
                      "arguments": _args({"command": a.get("command")})}
                     for a in extra.get("actions") or [] if isinstance(a, dict)]
        for c in calls:
            self.names[c["id"]] = c["name"]
        response = _dict(extra.get("response"))
        usage = _dict(response.get("usage"))
        choices = response.get("choices") if isinstance(response.get("choices"), list) else []
        first = choices[0] if choices and isinstance(choices[0], dict) else {}
        return "assistant", {"step": self.calls, "content": _text(m.get("content")) or None,
                             "reasoning": m.get("reasoning_content") or None, "tool_calls": calls,
                             "finish_reason": first.get("finish_reason"),
                             "prompt_tokens": _int(usage.get("prompt_tokens")),
                             "completion_tokens": _int(usage.get("completion_tokens"))}


class StepWatch:
    """Adds a StepSource's steps to the transcript as the CLI's output comes; a source that fails is dropped."""

    def __init__(self, source: StepSource | None, transcript: Transcript, agent: str) -> None:
        self.source, self.transcript, self.agent = source, transcript, agent

    def __call__(self, chunk: bytes) -> None:
        self._add(lambda src: src.feed(chunk))

    def finish(self) -> None:
        """What is left once the CLI has ended (the last line, the trajectory's final state)."""
        self._add(lambda src: src.finish())

    def _add(self, read: Callable[[StepSource], list[Step]]) -> None:
        if self.source is None:
            return
        try:
            for kind, fields in read(self.source):
                self.transcript.add(kind, **fields)
        except Exception as exc:  # noqa: BLE001 - a reader's bug must not end the run: its steps just stop
            self.source = None
            self.transcript.add("note", event="steps_unread", agent=self.agent, error=f"{type(exc).__name__}: {exc}")

