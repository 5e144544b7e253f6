"""A small client for OpenAI-compatible chat endpoints (SGLang, vLLM, OpenAI, RunPod, the fake server).

Standard library (and requests, imported only by the transport that uses it), and from agentswarm only the
standard-library scrubber: it runs inside slim sandboxes. The bytes move through a transport
(agentswarm/llm/transport.py): requests for real endpoints, http.client for loopback ones; the retries,
timeouts, typed errors and parsing here are the same for both.
The API key lives only in a private attribute and the request header; every error text is scrubbed.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from agentswarm.llm.replies import (
    ChatReply,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMProtocolError,
    LLMTimeout,
    StreamAccumulator,
    ToolCall,
    Usage,
    clip,
    to_reply,
)
from agentswarm.llm.transport import (
    TRANSPORTS,
    Response,
    StdlibTransport,
    Transport,
    TransportError,
    TransportTimeout,
    is_loopback_http,
)
from agentswarm.scrubbing import scrub

__all__ = [
    "ChatClient", "ChatReply", "LLMClient", "LLMConnectionError", "LLMError", "LLMHTTPError", "LLMProtocolError",
    "LLMTimeout", "ToolCall", "Usage", "estimate_cost_usd", "make_transport", "normalize_base_url", "parse_retry_after",
]
log = logging.getLogger("agentswarm.llm")
T = TypeVar("T")

def normalize_base_url(url: str) -> str:
    """Strip whitespace, trailing slashes and one trailing '/v1' so that '/v1/...' can be appended."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("LLM base URL is empty")
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[:-3].rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"LLM base URL must start with http:// or https:// and name a host, got {url!r}")
    return url


def estimate_cost_usd(
    usage: Usage,
    latency_s: float,
    *,
    price_in_per_mtok: float = 0.0,
    price_out_per_mtok: float = 0.0,
    gpu_price_per_hour: float = 0.0,
) -> float:
    """Dollar cost of one call: GPU time when a GPU price is set (self-hosted), else tokens at list price."""
    for name, value in (
        ("latency_s", latency_s),
        ("price_in_per_mtok", price_in_per_mtok),
        ("price_out_per_mtok", price_out_per_mtok),
        ("gpu_price_per_hour", gpu_price_per_hour),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if gpu_price_per_hour > 0:
        return latency_s / 3600.0 * gpu_price_per_hour
    return (usage.prompt_tokens * price_in_per_mtok + usage.completion_tokens * price_out_per_mtok) / 1_000_000


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # only for the rare HTTP-date form

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ChatClient(Protocol):
    """What the planner, subplanner, reconciler and checks need of a client: one endpoint's LLMClient or the
    router's RoutedClient over LLM_ENDPOINTS."""

    model: str

    def chat(self, messages: list[dict], *, tools: list[dict] | None = None, tool_choice: str | dict | None = None,
             max_tokens: int | None = None, temperature: float | None = None, stream: bool = False,
             extra_body: dict | None = None) -> ChatReply: ...

    def models(self) -> list[str]: ...

    def close(self) -> None: ...


def make_transport(name: str, base_url: str) -> Transport:
    """The transport called `name` ("auto": stdlib for loopback http, else requests)."""
    if name not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {name!r}")
    if name == "stdlib" or (name == "auto" and is_loopback_http(base_url)):
        if not base_url.startswith("http://"):
            raise ValueError(f"the stdlib transport speaks plain http only, not {base_url!r}")
        return StdlibTransport()
    from agentswarm.llm.requests_transport import RequestsTransport

    return RequestsTransport()


class LLMClient:
    """Chat completions over HTTP, with timeouts, bounded retries and typed errors.

    `transport`: "auto" (http.client for a plain-http loopback URL, else a pooled requests session),
    "requests", "stdlib", or a Transport.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str = "glm-5",
        *,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        max_backoff_s: float = 60.0,
        user_agent: str = "agentswarm",
        transport: str | Transport = "auto",
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff_base_s < 0 or max_backoff_s < 0:
            raise ValueError("backoff_base_s and max_backoff_s must be >= 0")
        if not model:
            raise ValueError("model must be a non-empty string")
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.max_backoff_s = max_backoff_s
        self.user_agent = user_agent
        self.__key = api_key.strip() if api_key and api_key.strip() else None
        self._transport = make_transport(transport, self.base_url) if isinstance(transport, str) else transport

    def __repr__(self) -> str:
        key = "set" if self.__key else "none"
        return f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, api_key=<{key}>)"

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the pooled connections."""
        self._transport.close()

    def chat(
        self,
        messages: list[dict],
        *,
        tools: list[dict] | None = None,
        tool_choice: str | dict | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stream: bool = False,
        extra_body: dict | None = None,
    ) -> ChatReply:
        """Send one chat completion request and return the assembled reply."""
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m:
                raise ValueError(f"messages[{i}] must be a dict with a 'role', got {clip(repr(m), 100)}")
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if tools:
            body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if extra_body:
            body.update(extra_body)
        started = time.monotonic()

        def reply(data: dict) -> ChatReply:
            if self.__key:  # a server that echoes the key (in any form) must not get it stored
                dumped = json.dumps(data)
                scrubbed = self._scrub(dumped)
                if scrubbed != dumped:
                    data = json.loads(scrubbed)
            return to_reply(data, time.monotonic() - started, self.model, self._scrub, request=body)

        return self._send("POST", "/v1/chat/completions", body, reply, stream=stream)

    def models(self) -> list[str]:
        """The model ids the endpoint serves (GET /v1/models)."""
        def ids(data: dict) -> list[str]:
            items = data.get("data")
            if not isinstance(items, list):
                raise LLMProtocolError("/v1/models: no 'data' list in the answer", status=200,
                                       body_excerpt=clip(self._scrub(json.dumps(data))))
            return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

        return self._send("GET", "/v1/models", None, ids, stream=False)

    # -- transport ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Every form of the key (plain, base64, hex, percent-encoded) blanked; always before any cut."""
        if self.__key and text:
            text = scrub(text, [self.__key])
        return text

    def _headers(self, stream: bool, body: bool) -> dict[str, str]:
        headers = {"User-Agent": self.user_agent, "Accept": "text/event-stream" if stream else "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.max_backoff_s, self.backoff_base_s * (2**attempt))
        return min(self.max_backoff_s, base + random.uniform(0, base * 0.25))  # jitter spreads a thundering herd

    def _send(self, method: str, path: str, body: dict | None, parse: Callable[[dict], T], *, stream: bool) -> T:
        """`parse` of the answer's JSON (a stream folded into one completion), retrying 429, 5xx, timeouts, lost
        connections, and a 200 that is cut off, not JSON, empty or not what `parse` reads (a protocol error)."""
        url = self.base_url + path
        data = None if body is None else json.dumps(body, allow_nan=False).encode()
        headers = self._headers(stream, data is not None)
        last: LLMError | None = None
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            started = time.monotonic()
            try:
                resp = self._transport.request(method, url, data, headers, self.timeout_s)
            except TransportTimeout as exc:  # connect or read: retried, as a 5xx is (a busy server is often both)
                last = LLMTimeout(f"{method} {url}: no answer within {self.timeout_s:g}s ({exc.kind})")
            except TransportError as exc:
                last = LLMConnectionError(f"{method} {url}: cannot connect: {clip(self._scrub(str(exc)), 300)}")
            else:
                if resp.status < 400:
                    try:
                        return parse(self._read_stream(resp, started) if stream else self._read_json(resp))
                    except (LLMTimeout, LLMProtocolError) as exc:  # stalled half way, cut, garbled: as a 5xx is
                        last = exc
                    finally:
                        resp.close()
                else:
                    text = clip(self._scrub(_safe_text(resp)))
                    status = resp.status
                    retry_after = parse_retry_after(resp.header("Retry-After"))
                    resp.close()
                    err = LLMHTTPError(f"{method} {url}: HTTP {status}: {text}", status=status, body_excerpt=text)
                    err.retry_after = retry_after  # type: ignore[attr-defined]  # the router's circuit honours it
                    if status != 429 and status < 500:
                        raise err
                    last = err
            assert last is not None
            if attempt >= self.max_retries:
                break
            delay = self._delay(attempt, retry_after)
            log.warning("LLM %s %s failed (%s); retry %d/%d in %.2fs", method, path,
                        last.status if isinstance(last, LLMHTTPError) else type(last).__name__, attempt + 1,
                        self.max_retries, delay)
            time.sleep(delay)
        assert last is not None
        last.args = (f"{last.args[0]} (gave up after {self.max_retries + 1} attempts)",)
        raise last

    def _read_json(self, resp: Response) -> dict:
        try:
            text = resp.read().decode("utf-8", errors="replace")
        except TransportTimeout:
            raise LLMTimeout(f"answer stalled for more than {self.timeout_s:g}s") from None
        except TransportError as exc:
            raise LLMProtocolError(f"answer cut off while reading: {exc.kind}", status=resp.status) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            excerpt = clip(self._scrub(text))
            raise LLMProtocolError(f"answer is not valid JSON ({exc.msg}): {excerpt}",
                                   status=resp.status, body_excerpt=excerpt) from None
        if not isinstance(data, dict):
            excerpt = clip(self._scrub(text))
            raise LLMProtocolError(f"answer is not a JSON object: {excerpt}", status=resp.status,
                                   body_excerpt=excerpt)
        return data

    def _read_stream(self, resp: Response, started: float) -> dict:
        acc = StreamAccumulator()
        seen: list[str] = []
        try:
            for raw_line in sse_lines(resp.chunks()):
                if time.monotonic() - started > self.timeout_s:
                    raise LLMTimeout(f"stream exceeded {self.timeout_s:g}s")
                line = raw_line.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue  # SSE comments (": keep-alive"), event names and blank separators
                payload = line[5:].strip()
                if len(seen) < 4:
                    seen.append(payload)
                if payload == "[DONE]":
                    acc.done = True
                    break
                try:
                    chunk = json.loads(payload)
                except json.JSONDecodeError:
                    excerpt = clip(self._scrub(payload))
                    raise LLMProtocolError(f"stream chunk is not valid JSON: {excerpt}",
                                           status=resp.status, body_excerpt=excerpt) from None
                if isinstance(chunk, dict) and "error" in chunk:
                    excerpt = clip(self._scrub(json.dumps(chunk["error"])))
                    raise LLMProtocolError(f"stream carried an error: {excerpt}", status=resp.status,
                                           body_excerpt=excerpt)
                acc.add(chunk)
        except TransportTimeout:
            raise LLMTimeout(f"stream stalled for more than {self.timeout_s:g}s") from None
        except TransportError as exc:
            raise LLMProtocolError(f"stream cut off: {exc.kind}", status=resp.status) from None
        if not acc.done and acc.finish_reason is None:
            excerpt = clip(self._scrub("\n".join(seen)))
            raise LLMProtocolError("stream ended before [DONE] and without a finish_reason (truncated)",
                                   status=resp.status, body_excerpt=excerpt)
        if not acc.chunks:
            raise LLMProtocolError("stream carried no chunks", status=resp.status)
        return acc.result()


def sse_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a body arriving in chunks, split at CR, LF or CRLF (as requests' iter_lines splits them)."""
    pending: bytes | None = None
    for chunk in chunks:
        if pending is not None:
            chunk = pending + chunk
        lines = chunk.splitlines()
        pending = lines.pop() if lines and lines[-1] and chunk[-1:] == lines[-1][-1:] else None
        yield from lines
    if pending is not None:
        yield pending


def _safe_text(resp: Response) -> str:
    try:
        return resp.read().decode("utf-8", errors="replace")
    except TransportError:
        return "<body unreadable>"
