"""Turning a scripted reply into OpenAI chat-completion JSON and SSE chunks (used by the fake server)."""

from __future__ import annotations

import json
import math
from typing import Any

from agentswarm.demo.faults import Fault

REPLY_KEYS = {"content", "tool_calls", "reasoning", "usage", "finish_reason"}
NO_USAGE = "absent"  # a scripted reply's usage: send no usage at all, as some servers do


class ScriptError(ValueError):
    """A scripted reply that is not a string, a Fault or a well-formed reply dict."""


def normalize_reply(reply: Any) -> dict[str, Any] | Fault:
    """Check a script item and return it as a reply dict (or the Fault it is)."""
    if isinstance(reply, Fault):
        return reply
    if isinstance(reply, str):
        return {"content": reply, "tool_calls": []}
    if not isinstance(reply, dict):
        raise ScriptError(f"a scripted reply must be a str, a dict or a Fault, got {type(reply).__name__}")
    unknown = sorted(set(reply) - REPLY_KEYS)
    if unknown:
        raise ScriptError(f"scripted reply has unknown key(s) {', '.join(unknown)}; allowed: {sorted(REPLY_KEYS)}")
    out = dict(reply)
    out.setdefault("content", None)
    calls = out.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ScriptError("scripted reply 'tool_calls' must be a list")
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
            raise ScriptError(f"scripted tool_calls[{i}] needs a non-empty 'name'")
        if not isinstance(call.get("arguments", {}), dict | str):
            raise ScriptError(f"scripted tool_calls[{i}] 'arguments' must be a dict or a JSON string")
    out["tool_calls"] = calls
    usage = out.get("usage")
    if usage is not None and usage != NO_USAGE and not (
        isinstance(usage, dict) and all(isinstance(usage.get(k), int) for k in ("prompt_tokens", "completion_tokens"))
    ):
        raise ScriptError("scripted reply 'usage' must be {'prompt_tokens': int, 'completion_tokens': int} "
                          f"or {NO_USAGE!r}")
    return out


def _chars_of_prompt(body: dict) -> int:
    total = 0
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        total += len(c) if isinstance(c, str) else len(json.dumps(c)) if c else 0
        for tc in m.get("tool_calls") or []:
            total += len(json.dumps(tc))
    if body.get("tools"):
        total += len(json.dumps(body["tools"]))
    return total


def message_of(reply: dict, req_no: int) -> dict[str, Any]:
    """The OpenAI assistant message for a normalized reply; tool-call ids are deterministic."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
    if reply.get("reasoning"):
        message["reasoning_content"] = reply["reasoning"]
    if reply["tool_calls"]:
        message["tool_calls"] = [
            {
                "id": call.get("id") or f"call_{req_no}_{i}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": call["arguments"] if isinstance(call.get("arguments"), str)
                    else json.dumps(call.get("arguments", {})),
                },
            }
            for i, call in enumerate(reply["tool_calls"])
        ]
    return message


def usage_of(reply: dict, body: dict, message: dict) -> dict[str, int]:
    """Scripted usage, or ceil(chars/4) of the prompt and of the completion."""
    if reply.get("usage"):
        u = reply["usage"]
        return {"prompt_tokens": u["prompt_tokens"], "completion_tokens": u["completion_tokens"]}
    out_chars = len(message.get("content") or "") + len(message.get("reasoning_content") or "")
    out_chars += sum(len(tc["function"]["name"]) + len(tc["function"]["arguments"]) for tc in message.get("tool_calls", []))
    return {"prompt_tokens": max(1, math.ceil(_chars_of_prompt(body) / 4)), "completion_tokens": math.ceil(out_chars / 4)}


def completion(reply: dict, body: dict, model: str, req_no: int, created: int) -> dict[str, Any]:
    """A full non-streamed chat.completion object (without "usage" when the reply's usage is NO_USAGE)."""
    message = message_of(reply, req_no)
    finish = reply.get("finish_reason") or ("tool_calls" if reply["tool_calls"] else "stop")
    full = {
        "id": f"chatcmpl-fake-{req_no}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if reply.get("usage") != NO_USAGE:
        usage = usage_of(reply, body, message)
        full["usage"] = usage | {"total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
    return full


def _pieces(text: str, n: int = 3) -> list[str]:
    size = max(1, math.ceil(len(text) / n))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def stream_chunks(full: dict, include_usage: bool) -> list[dict]:
    """The SSE chunks (without [DONE]) that a real server would send for `full`, split into deltas."""
    base = {k: full[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    message = full["choices"][0]["message"]

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    if message.get("reasoning_content"):
        chunks += [chunk({"reasoning_content": p}) for p in _pieces(message["reasoning_content"])]
    if message.get("content"):
        chunks += [chunk({"content": p}) for p in _pieces(message["content"])]
    for i, tc in enumerate(message.get("tool_calls", [])):
        fn = tc["function"]
        chunks.append(chunk({"tool_calls": [{"index": i, "id": tc["id"], "type": "function",
                                             "function": {"name": fn["name"], "arguments": ""}}]}))
        chunks += [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in _pieces(fn["arguments"])]
    chunks.append(chunk({}, full["choices"][0]["finish_reason"]))
    if include_usage and "usage" in full:
        chunks.append(base | {"choices": [], "usage": full["usage"]})
    return chunks
