"""The model gate's way upstream: one allowed request, tried on the endpoints until one answers it properly.

A connection error, a 5xx or a 429, and a 200 that is cut, not JSON, empty or without choices are all
the same thing here: the endpoint failed. Each such attempt is recorded as a failed call (told to
`failed`) and the request is tried again, bounded (max_retries plus one per endpoint): through the
router, on the next endpoint with a closed circuit (the failed one's circuit opens: the router's
backoff); without one, on the same upstream after a doubling pause. The last 5xx or 429 goes back to
the agent as it came (scrubbed by the gate); when nothing usable came, GateUpstreamError.
A streamed answer is handed over once its first bytes came: cut later, it cannot be taken back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any

import requests

from agentswarm.llm.endpoints import Settings
from agentswarm.llm.router import STARTING, Lease, NoEndpoint, Router

MAX_ANSWER = 64 * 1024 * 1024  # bytes of a non-streamed answer the gate reads before it gives up on it


class GateUpstreamError(Exception):
    """No endpoint gave a usable answer within the attempts."""


@dataclass
class Answer:
    """What came back: a whole body (`content`), or a stream whose first bytes are `first`."""

    status: int
    content_type: str
    content: bytes | None
    route: Lease | None
    started: float  # monotonic
    wall: float  # time.time() when the attempt began
    retry_after: str = ""
    resp: requests.Response | None = None
    chunks: Iterator[bytes] | None = None
    first: bytes = b""


Failed = Callable[[Lease | None, float, float, str], None]  # (route, started, wall, error)


class Upstream:
    """Sends a request to the upstream (or the router's endpoints) and retries what failed."""

    def __init__(self, session: requests.Session, upstream: str, headers: Callable[[Message], dict[str, str]], *,
                 router: Router | None, settings: Settings | None, timeout_s: float, max_retries: int,
                 pause_s: float, failed: Failed) -> None:
        self.session, self.upstream, self.headers = session, upstream, headers
        self.router, self.settings, self.timeout_s = router, settings, timeout_s
        self.max_retries, self.pause_s, self.failed = max_retries, pause_s, failed

    def attempts(self) -> int:
        """How many times one request may be tried."""
        return self.max_retries + (len(self.router.endpoints) if self.router is not None else 1)

    def exchange(self, method: str, path: str, body: bytes | None, incoming: Message, streamed: bool) -> Answer:
        """The first usable answer (or the last 5xx/429); GateUpstreamError when none came."""
        attempts, why = self.attempts(), "no attempt"
        for i in range(attempts):
            last = i + 1 == attempts
            started, wall = time.monotonic(), time.time()
            route, url, headers, data = self._target(path, body, incoming, started, wall)
            try:
                resp = self._open(method, url, data, headers, route)
            except requests.RequestException as exc:
                why = f"upstream unreachable: {type(exc).__name__}"
                self._retry(route, started, wall, why, i, last)
                continue
            status = resp.status_code
            if (status >= 500 or status == 429) and not last:
                excerpt = _excerpt(resp)
                why = f"HTTP {status}"
                self._retry(route, started, wall, f"HTTP {status}: {excerpt}", i, last)
                continue
            answer = self._taken(resp, route, started, wall, path, streamed)
            if isinstance(answer, Answer):
                return answer
            why = answer
            self._retry(route, started, wall, why, i, last)
        raise GateUpstreamError(f"no usable answer in {attempts} attempts; the last: {why}")

    def _target(self, path: str, body: bytes | None, incoming: Message, started: float,
                wall: float) -> tuple[Lease | None, str, dict[str, str], bytes | None]:
        """Where this attempt goes: a lease on the first endpoint with room (its key, its model), or the upstream."""
        if self.router is None:
            return None, self.upstream + path, self.headers(incoming), body
        try:
            lease = self.router.lease("worker")
        except NoEndpoint as exc:  # every endpoint full or failing for the whole wait
            self.failed(None, started, wall, f"no endpoint: {exc}")
            raise GateUpstreamError(str(exc)) from None
        ep = lease.endpoint
        headers = {k: v for k, v in self.headers(incoming).items() if k.lower() != "authorization"}
        key = ep.key(self.settings)  # read now, sent upstream only
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return lease, ep.base_url + path, headers, _with_model(body, ep.model)

    def _open(self, method: str, url: str, data: bytes | None, headers: dict[str, str],
              route: Lease | None) -> requests.Response:
        """The response's head; a cold endpoint still starting (502/503/504) is asked again within its cold limit."""
        timeout = route.timeout_s if route is not None else self.timeout_s
        until, pause = time.monotonic() + timeout, 1.0
        while True:
            resp = self.session.request(method, url, data=data, headers=headers, stream=True, timeout=timeout)
            if not (route is not None and route.cold and resp.status_code in STARTING
                    and time.monotonic() + pause < until):
                return resp
            resp.close()
            time.sleep(pause)
            pause = min(pause * 2, 15.0)

    def _taken(self, resp: requests.Response, route: Lease | None, started: float, wall: float, path: str,
               streamed: bool) -> Answer | str:
        """The answer, or why it is no answer (cut, not JSON, empty): then the endpoint failed."""
        ctype = resp.headers.get("Content-Type", "application/json")
        retry_after = resp.headers.get("Retry-After", "")
        retry_after = retry_after if retry_after.strip().isdigit() else ""
        try:
            if streamed and resp.status_code < 400:
                chunks = resp.iter_content(chunk_size=16 * 1024)
                first = next(chunks, b"")
                if first:
                    return Answer(resp.status_code, ctype, None, route, started, wall, retry_after, resp, chunks, first)
                content = b""
            else:
                content = _read(resp)
        except requests.RequestException as exc:
            resp.close()
            return f"HTTP {resp.status_code} cut off ({type(exc).__name__})"
        resp.close()
        bad = _unusable(path, content) if resp.status_code < 400 and not streamed else None
        if streamed and not content:
            bad = "an empty stream"
        if bad:
            return f"HTTP {resp.status_code} with {bad}"
        return Answer(resp.status_code, ctype, content, route, started, wall, retry_after)

    def _retry(self, route: Lease | None, started: float, wall: float, error: str, i: int, last: bool) -> None:
        """Record the failed attempt (its endpoint's circuit opens) and, unless it was the last, pause."""
        if route is not None and self.router is not None:
            self.router.done(route, False)
        again = "failed over" if self.router is not None else "retried"
        self.failed(route, started, wall, error if last else f"{error}; {again}")
        if not last and self.router is None:
            time.sleep(min(self.pause_s * 2 ** i, 8.0))


def _read(resp: requests.Response) -> bytes:
    data = bytearray()
    for chunk in resp.iter_content(chunk_size=64 * 1024):
        data += chunk
        if len(data) > MAX_ANSWER:
            raise requests.ConnectionError(f"answer larger than {MAX_ANSWER} bytes")
    return bytes(data)


def _excerpt(resp: requests.Response) -> str:
    try:
        return resp.raw.read(300, decode_content=True).decode(errors="replace")
    except Exception:  # noqa: BLE001 - only an excerpt for the record
        return ""
    finally:
        resp.close()


def _unusable(path: str, content: bytes) -> str | None:
    """Why a 2xx body is no answer (None when it is one): empty, not JSON (a cut body), or without its payload."""
    if not content.strip():
        return "an empty body"
    try:
        data: Any = json.loads(content)
    except ValueError:
        return f"a body that is not JSON (cut after {len(content)} bytes?)"
    if path == "/v1/chat/completions":
        ok = isinstance(data, dict) and isinstance(data.get("choices"), list) and bool(data["choices"])
        return None if ok else "no choices"
    return None if isinstance(data, dict) and isinstance(data.get("data"), list) else "no model list"


def _with_model(body: bytes | None, model: str) -> bytes | None:
    """A chat request's body with the endpoint's model in it (the sandbox knows no endpoint)."""
    if not body:
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or "model" not in data and "messages" not in data:
        return body
    data["model"] = model
    return json.dumps(data).encode()
