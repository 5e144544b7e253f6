"""A small client for OpenAI-compatible chat endpoints (SGLang, vLLM, OpenAI, RunPod, the fake server).

Standard library + requests only, and nothing else from agentswarm: it runs inside slim sandboxes.
The API key lives only in a private attribute and the request header; every error text is scrubbed.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

log = logging.getLogger("agentswarm.llm")

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
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)


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
                f"{_excerpt(text, 200)}"
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

    def assistant_message(self) -> dict:
        """The assistant message to append to the history (reasoning is deliberately left out)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


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


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = text if isinstance(text, str) else repr(text)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class LLMClient:
    """Chat completions over a pooled HTTP session, with timeouts, bounded retries and typed errors."""

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
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def __repr__(self) -> str:
        key = "set" if self.__key else "none"
        return f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, api_key=<{key}>)"

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the pooled connections."""
        self._session.close()

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
                raise ValueError(f"messages[{i}] must be a dict with a 'role', got {_excerpt(repr(m), 100)}")
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
        resp = self._send("POST", "/v1/chat/completions", body, stream=stream)
        try:
            if stream:
                data = self._read_stream(resp, started)
            else:
                data = self._read_json(resp)
        finally:
            resp.close()
        if self.__key and self.__key in json.dumps(data):  # a server that echoes the key must not get it stored
            data = json.loads(self._scrub(json.dumps(data)))
        return _to_reply(data, time.monotonic() - started, self.model, self._scrub)

    def models(self) -> list[str]:
        """The model ids the endpoint serves (GET /v1/models)."""
        resp = self._send("GET", "/v1/models", None, stream=False)
        try:
            data = self._read_json(resp)
        finally:
            resp.close()
        items = data.get("data")
        if not isinstance(items, list):
            raise LLMProtocolError("/v1/models: no 'data' list in the answer", status=resp.status_code,
                                   body_excerpt=self._scrub(_excerpt(json.dumps(data))))
        return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]

    # -- transport ---------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self.__key and text:
            text = text.replace(self.__key, "***")
        return text

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {"User-Agent": self.user_agent, "Accept": "text/event-stream" if stream else "application/json"}
        if self.__key:
            headers["Authorization"] = f"Bearer {self.__key}"
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.max_backoff_s, self.backoff_base_s * (2**attempt))
        return min(self.max_backoff_s, base + random.uniform(0, base * 0.25))  # jitter spreads a thundering herd

    def _send(self, method: str, path: str, body: dict | None, *, stream: bool) -> requests.Response:
        url = self.base_url + path
        last: LLMError | None = None
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                resp = self._session.request(
                    method, url, json=body, headers=self._headers(stream), timeout=self.timeout_s, stream=stream
                )
            except requests.Timeout as exc:
                # Not retried: a model that hangs once usually hangs again, and the caller owns the deadline.
                raise LLMTimeout(
                    f"{method} {url}: no answer within {self.timeout_s:g}s ({type(exc).__name__})"
                ) from None
            except requests.RequestException as exc:
                last = LLMConnectionError(f"{method} {url}: cannot connect: {self._scrub(_excerpt(str(exc), 300))}")
            else:
                if resp.status_code < 400:
                    return resp
                text = self._scrub(_excerpt(_safe_text(resp)))
                status = resp.status_code
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                resp.close()
                err = LLMHTTPError(f"{method} {url}: HTTP {status}: {text}", status=status, body_excerpt=text)
                if status != 429 and status < 500:
                    raise err
                last = err
            if attempt >= self.max_retries:
                break
            delay = self._delay(attempt, retry_after)
            log.warning("LLM %s %s failed (%s); retry %d/%d in %.2fs", method, path,
                        last.status or type(last).__name__, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
        assert last is not None
        last.args = (f"{last.args[0]} (gave up after {self.max_retries + 1} attempts)",)
        raise last

    def _read_json(self, resp: requests.Response) -> dict:
        try:
            text = resp.text
        except requests.RequestException as exc:
            raise LLMProtocolError(f"answer cut off while reading: {type(exc).__name__}",
                                   status=resp.status_code) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            excerpt = self._scrub(_excerpt(text))
            raise LLMProtocolError(f"answer is not valid JSON ({exc.msg}): {excerpt}",
                                   status=resp.status_code, body_excerpt=excerpt) from None
        if not isinstance(data, dict):
            excerpt = self._scrub(_excerpt(text))
            raise LLMProtocolError(f"answer is not a JSON object: {excerpt}", status=resp.status_code,
                                   body_excerpt=excerpt)
        return data

    def _read_stream(self, resp: requests.Response, started: float) -> dict:
        acc = _StreamAccumulator()
        seen: list[str] = []
        try:
            for raw_line in resp.iter_lines(decode_unicode=False):
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
                    excerpt = self._scrub(_excerpt(payload))
                    raise LLMProtocolError(f"stream chunk is not valid JSON: {excerpt}",
                                           status=resp.status_code, body_excerpt=excerpt) from None
                if isinstance(chunk, dict) and "error" in chunk:
                    excerpt = self._scrub(_excerpt(json.dumps(chunk["error"])))
                    raise LLMProtocolError(f"stream carried an error: {excerpt}", status=resp.status_code,
                                           body_excerpt=excerpt)
                acc.add(chunk)
        except requests.RequestException as exc:
            if isinstance(exc, requests.Timeout | requests.exceptions.ConnectionError) and "timed out" in str(exc):
                raise LLMTimeout(f"stream stalled for more than {self.timeout_s:g}s") from None
            raise LLMProtocolError(f"stream cut off: {type(exc).__name__}", status=resp.status_code) from None
        if not acc.done and acc.finish_reason is None:
            excerpt = self._scrub(_excerpt("\n".join(seen)))
            raise LLMProtocolError("stream ended before [DONE] and without a finish_reason (truncated)",
                                   status=resp.status_code, body_excerpt=excerpt)
        if not acc.chunks:
            raise LLMProtocolError("stream carried no chunks", status=resp.status_code)
        return acc.result()


def _safe_text(resp: requests.Response) -> str:
    try:
        return resp.text
    except requests.RequestException:
        return "<body unreadable>"


class _StreamAccumulator:
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
            raise LLMProtocolError(f"stream chunk is not a JSON object: {_excerpt(repr(chunk), 200)}")
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


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _to_reply(data: dict, latency_s: float, default_model: str, scrub: Any) -> ChatReply:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        excerpt = scrub(_excerpt(json.dumps(data)))
        raise LLMProtocolError(f"answer has no choices: {excerpt}", body_excerpt=excerpt)
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        excerpt = scrub(_excerpt(json.dumps(data)))
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
    usage_raw = data.get("usage") or {}
    usage = Usage(_int(usage_raw.get("prompt_tokens")), _int(usage_raw.get("completion_tokens")))
    extras = {k: v for k, v in data.items() if k not in _KNOWN_TOP}
    extras.update({k: v for k, v in choice.items() if k not in _KNOWN_CHOICE and v is not None})
    extras.update({k: v for k, v in message.items() if k not in _KNOWN_MESSAGE and v is not None})
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
