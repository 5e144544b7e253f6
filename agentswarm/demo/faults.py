"""Failures the fake LLM server can be told to produce, one request at a time."""

from __future__ import annotations

from dataclasses import dataclass

FAULT_KINDS = ("rate_limit", "server_error", "hang", "stall", "malformed_json", "truncated", "echo_auth")


@dataclass(frozen=True)
class Fault:
    """One scripted failure; build it with the class methods."""

    kind: str
    status: int = 500
    retry_after: float | str | None = None
    seconds: float = 0.0
    message: str = ""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {', '.join(FAULT_KINDS)}")

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = 2) -> Fault:
        """429 Too Many Requests, with a Retry-After header (seconds or an HTTP date) unless None."""
        return cls("rate_limit", status=429, retry_after=retry_after, message="rate limit exceeded")

    @classmethod
    def server_error(cls, status: int = 500, message: str = "internal server error") -> Fault:
        """A 5xx (or any status) with a JSON error body."""
        if not 400 <= status <= 599:
            raise ValueError(f"server_error status must be 4xx or 5xx, got {status}")
        return cls("server_error", status=status, message=message)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Say nothing for `seconds` (past the client's timeout), then drop the connection."""
        if seconds < 0:
            raise ValueError(f"hang seconds must be >= 0, got {seconds}")
        return cls("hang", seconds=seconds)

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Start a streamed answer, then go silent for `seconds` and drop it (non-streamed: same as hang)."""
        if seconds < 0:
            raise ValueError(f"stall seconds must be >= 0, got {seconds}")
        return cls("stall", seconds=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """200 with a body (or a stream chunk) that is not JSON."""
        return cls("malformed_json", status=200)

    @classmethod
    def truncated(cls) -> Fault:
        """200 with the JSON body cut in half, or a stream cut before its finish chunk and [DONE]."""
        return cls("truncated", status=200)

    @classmethod
    def echo_auth(cls, status: int = 401) -> Fault:
        """An error whose body echoes the Authorization header back, as careless proxies do."""
        return cls("echo_auth", status=status, message="invalid credentials")
