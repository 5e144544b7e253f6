"""Tool calls a model wrote into its text, as SGLang or vLLM pass them on when started without a tool-call parser.

Two forms: GLM's XML (`<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>`, where a
value is raw text for a string parameter and JSON otherwise) and Hermes/Qwen's `<tool_call>{json}</tool_call>`.
A block the text ends inside (the stop token ate the closing tag, or the token limit) still counts.
Standard library only: part of the client that runs inside slim sandboxes.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from agentswarm.llm.lenient_json import LenientJSONError, loads

_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)(?:</arg_value>|\Z)", re.S)
_NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')


def _param_types(tools: list[dict] | None) -> dict[str, dict[str, str]]:
    """{tool name: {parameter: JSON type}} from the request's tool schemas."""
    out: dict[str, dict[str, str]] = {}
    for tool in tools or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        props = (fn.get("parameters") or {}).get("properties") or {}
        out[fn["name"]] = {k: str(v.get("type", "")) for k, v in props.items() if isinstance(v, dict)}
    return out


def _xml_call(body: str, types: dict[str, dict[str, str]]) -> tuple[str, dict[str, Any]]:
    name = body.split("<arg_key>", 1)[0].strip()
    kinds = types.get(name, {})
    args: dict[str, Any] = {}
    for key, raw in _PAIR.findall(body):
        key = key.strip()
        if kinds.get(key) == "string":
            args[key] = raw  # kept exactly: file contents keep their last newline
            continue
        try:
            args[key] = json.loads(raw.strip())
        except ValueError:
            args[key] = raw
    return name, args


def _json_call(body: str) -> tuple[str, str]:
    """(name, arguments as JSON text); the raw text as arguments when it cannot be read."""
    try:
        value, _ = loads(body)
    except LenientJSONError:
        found = _NAME.search(body)
        return (found.group(1) if found else "", body)
    if not isinstance(value, dict):
        return "", body
    args = value.get("arguments", value.get("parameters", {}))
    return str(value.get("name") or ""), args if isinstance(args, str) else json.dumps(args)


def calls_in_text(content: str, tools: list[dict] | None) -> tuple[list[dict[str, str]], str | None]:
    """([{"id", "name", "arguments"}], the content without the blocks or None); ([], content) if none."""
    if "<tool_call>" not in content:
        return [], content
    types = _param_types(tools)
    calls = []
    for m in _BLOCK.finditer(content):
        body = m.group(1).strip()
        if body.startswith("{"):
            name, arguments = _json_call(body)
        else:
            name, args = _xml_call(body, types)
            arguments = json.dumps(args)
        calls.append({"id": "call_" + secrets.token_hex(6), "name": name, "arguments": arguments})
    rest = _BLOCK.sub("", content).strip()
    return calls, rest or None
