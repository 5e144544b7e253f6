"""Small HTTP helpers: an error that becomes a JSON reply, a raw (non-JSON) reply, and strict parsing of query
values and bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, overload
from urllib.parse import parse_qs

MAX_BODY = 64 * 1024


class ApiError(Exception):
    """An expected failure: sent to the client as `{"error": message}` with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def query_params(query: str) -> dict[str, str]:
    """The last value of each query parameter."""
    return {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}


@overload
def int_param(params: dict[str, str], name: str, default: int, lo: int = 0, hi: int = 10**12) -> int: ...
@overload
def int_param(params: dict[str, str], name: str, default: None, lo: int = 0, hi: int = 10**12) -> int | None: ...
def int_param(params: dict[str, str], name: str, default: int | None, lo: int = 0, hi: int = 10**12) -> int | None:
    """An integer query parameter within [lo, hi], or 400."""
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}")
    return value


def list_param(params: dict[str, str], name: str, allowed: set[str]) -> list[str] | None:
    """A comma-separated list of allowed words, or 400."""
    raw = params.get(name, "")
    if not raw:
        return None
    values = [v.strip() for v in raw.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ApiError(400, f"{name}: unknown value {bad[0]!r} (expected {', '.join(sorted(allowed))})")
    return values


def parse_body(raw: bytes) -> dict[str, Any]:
    """A JSON object body (empty means {}), or 400."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body must be a JSON object")
    return body


def text_field(body: dict[str, Any], name: str, default: str = "", cap: int = 1000) -> str:
    """An optional string field of a body, or 400."""
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    if len(value) > cap:
        raise ApiError(400, f"{name} is longer than {cap} characters")
    return value


@dataclass(frozen=True)
class RawReply:
    """A GET endpoint's reply that is not JSON: bytes sent as they are, with their type and caching."""

    data: bytes
    content_type: str
    cache: str = "no-store"
