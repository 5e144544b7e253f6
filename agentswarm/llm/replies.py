"""What an OpenAI-compatible endpoint answers: errors, usage, tool calls, replies, and parsing them.

Standard library only (no requests): part of the client that runs inside slim sandboxes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agentswarm.llm.usage import Usage, completion_chars, read_usage

EXCERPT_CHARS = 500
_KNOWN_TOP = {"id", "object", "created", "model", "choices", "usage"}
_KNOWN_CHOICE = {"index", "message", "delta", "finish_reason"}
_KNOWN_MESSAGE = {"role", "content", "tool_calls", "reasoning_content", "reasoning"}
_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


class LLMError(Exception):
    """Any failure talking to the model; the message never contains the API key."""

    def __init__(self, message: str, *, status: int | None = None, body_excerpt: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body_excerpt = body_excerpt


class LLMHTTPError(LLMError):
    """A non-retryable 4xx, or retries exhausted on 429/5xx."""


class LLMTimeout(LLMError):
    """The request did not connect or answer within the per-request timeout."""


class LLMConnectionError(LLMError):
    """The endpoint could not be reached (refused, reset, DNS) after the retries."""


class LLMProtocolError(LLMError):
    """A 200 answer that is not a usable completion: bad JSON, no choices, a cut stream."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> dict:
        """The arguments as a dict; ValueError with a clear message if they are not a JSON object."""
        text = self.arguments.strip() if self.arguments else ""
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"tool call {self.name!r}: arguments are not valid JSON ({exc.msg} at char {exc.pos}): "
                f"{clip(text, 200)}"
            ) from None
        if not isinstance(value, dict):
            raise ValueError(f"tool call {self.name!r}: arguments must be a JSON object, got {type(value).__name__}")
        return value


@dataclass
class ChatReply:
    content: str | None
    tool_calls: list[ToolCall]
    reasoning: str | None
    finish_reason: str | None
    usage: Usage
    latency_s: float
    model: str
    extras: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    endpoint: str = ""  # the LLM_ENDPOINTS name that answered (set by the router)
    started_at: float = 0.0  # wall clock when the call took its slot (set by the router)
    failovers: list[dict] = field(default_factory=list)  # attempts endpoints failed before this answer (router)

    def assistant_message(self) -> dict:
        """The assistant message to append to the history (reasoning is deliberately left out).

        Arguments that are not a JSON object go back as {"invalid_arguments": <the raw text>}: servers that
        check the history (recent vLLM) would otherwise answer 400 to every later call.
        """
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": history_arguments(c)}}
                for c in self.tool_calls
            ]
        return message


def history_arguments(call: ToolCall) -> str:
    """The call's arguments if they are a JSON object, else a JSON object carrying the raw text."""
    try:
        call.parsed_arguments()
    except ValueError:
        return json.dumps({"invalid_arguments": call.arguments})
    return call.arguments if call.arguments.strip() else "{}"


def clip(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


class StreamAccumulator:
    """Folds SSE chunks into the shape of a non-streamed completion."""

    def __init__(self) -> None:
        self.done = False
        self.chunks = 0
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.top: dict[str, Any] = {}
        self.message_extras: dict[str, Any] = {}
        self.choice_extras: dict[str, Any] = {}

    def add(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            raise LLMProtocolError(f"stream chunk is not a JSON object: {clip(repr(chunk), 200)}")
        self.chunks += 1
        for key, value in chunk.items():
            if key not in ("choices", "usage"):
                self.top.setdefault(key, value)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            for key, value in choice.items():
                if key not in _KNOWN_CHOICE and value is not None:
                    self.choice_extras[key] = value
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(delta["content"])
            for key in ("reasoning_content", "reasoning"):
                if delta.get(key):
                    self.reasoning.append(delta[key])
            for key, value in delta.items():
                if key not in _KNOWN_MESSAGE and value is not None:
                    self.message_extras[key] = value
            for tc in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(int(tc.get("index", len(self.calls))),
                                             {"id": None, "name": "", "arguments": ""})
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["name"] += fn["name"]
                if fn.get("arguments"):
                    args = fn["arguments"]
                    slot["arguments"] += args if isinstance(args, str) else json.dumps(args)

    def result(self) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) if self.content else None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for _, c in sorted(self.calls.items())
            ]
        message.update(self.message_extras)
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason, **self.choice_extras}
        data = {**self.top, "object": "chat.completion", "choices": [choice]}
        if self.usage:
            data["usage"] = self.usage
        return data


def completion_of_body(reply: bytes, content_type: str) -> dict:
    """A raw answer (JSON, or SSE folded into one completion) as a dict; {} when it is neither."""
    data: Any = {}
    if "text/event-stream" in content_type:
        acc = StreamAccumulator()
        for line in reply.decode("utf-8", "replace").splitlines():
            payload = line[5:].strip() if line.startswith("data:") else ""
            if payload and payload != "[DONE]":
                try:
                    acc.add(json.loads(payload))
                except (ValueError, LLMProtocolError):
                    continue
        data = acc.result()
    else:
        try:
            data = json.loads(reply or b"{}")
        except ValueError:
            data = {}
    return data if isinstance(data, dict) else {}


def usage_of_bodies(request: bytes, reply: bytes, content_type: str) -> Usage:
    """The usage of one proxied call from its raw bodies (JSON or SSE), estimated when the reply has none."""
    try:
        body = json.loads(request or b"{}")
    except ValueError:
        body = {}
    data = completion_of_body(reply, content_type)
    choices = data.get("choices") if isinstance(data.get("choices"), list) else []
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    out = completion_chars(message) if isinstance(message, dict) else 0
    return read_usage(data.get("usage"), body if isinstance(body, dict) else None, out)


def to_reply(data: dict, latency_s: float, default_model: str, scrub: Any, request: dict | None = None) -> ChatReply:
    """The ChatReply of a completion; `request` (the body sent) lets usage be estimated and text tool calls read."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        excerpt = clip(scrub(json.dumps(data)))
        raise LLMProtocolError(f"answer has no choices: {excerpt}", body_excerpt=excerpt)
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        excerpt = clip(scrub(json.dumps(data)))
        raise LLMProtocolError(f"first choice has no message: {excerpt}", body_excerpt=excerpt)
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        content = json.dumps(content)  # some servers send content parts; keep them visible rather than drop
    reasoning = message.get("reasoning_content") or message.get("reasoning") or None
    if reasoning is None and content:
        m = _THINK.match(content)
        if m:  # servers without a reasoning parser leave GLM's <think> block in the content
            reasoning, content = m.group(1).strip(), content[m.end():]
    calls: list[ToolCall] = []
    for n, tc in enumerate(message.get("tool_calls") or []):
        if not isinstance(tc, dict):
            continue
        fn = tc.get("function") or {}
        args = fn.get("arguments", "")
        calls.append(ToolCall(
            id=str(tc.get("id") or f"call_{n}"),
            name=str(fn.get("name") or ""),
            arguments=args if isinstance(args, str) else json.dumps(args),
        ))
    extras = {k: v for k, v in data.items() if k not in _KNOWN_TOP}
    extras.update({k: v for k, v in choice.items() if k not in _KNOWN_CHOICE and v is not None})
    extras.update({k: v for k, v in message.items() if k not in _KNOWN_MESSAGE and v is not None})
    tools = request.get("tools") if isinstance(request, dict) else None
    if tools and not calls and content:  # a server without a tool-call parser leaves the calls in the text
        # Imported here: its parsers cost an import (on every sandbox start) that most replies never need.
        from agentswarm.llm.text_calls import calls_in_text
        found, rest = calls_in_text(content, tools)
        if found:
            calls = [ToolCall(c["id"], c["name"], c["arguments"]) for c in found]
            content, extras["tool_calls_from_text"] = rest, len(found)
    usage = read_usage(data.get("usage"), request, completion_chars(message))
    return ChatReply(
        content=content,
        tool_calls=calls,
        reasoning=reasoning,
        finish_reason=choice.get("finish_reason"),
        usage=usage,
        latency_s=latency_s,
        model=str(data.get("model") or default_model),
        extras=extras,
        raw=data,
    )
