"""A model endpoint in a brownout: an HTTP proxy that breaks a share of the chat calls on their way to a real server.

Put in front of the fake LLM (or any OpenAI-compatible server), each chat request rolls a seeded die: a 429 with
Retry-After, a 500, a hang past the caller's timeout (then the connection drops), a 200 whose body is cut half way,
or a clean pass-through. There is one die per `lane` (e.g. the agents' calls and the orchestrator's), so each lane
gets the same faults in the same order however its requests interleave with the other lanes'. A cut answer is the
upstream's real answer broken off: either short of the Content-Length it declares (the transport sees it:
"cut") or, with no length, ended by closing the connection (only reading the JSON tells: "cut-closed"). Every
roll is kept with its request (`rolls`), so a test can hold the swarm's records against what really happened.
Other requests (GET /v1/models, /health) pass untouched.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from agentswarm.demo.fake_llm import send_json

KINDS = ("rate_limit", "server_error", "hang", "cut")


@dataclass(frozen=True)
class Rates:
    """The share of chat calls each fault gets (their sum at most 1); the rest pass through."""

    rate_limit: float = 0.10
    server_error: float = 0.10
    hang: float = 0.03
    cut: float = 0.02

    def __post_init__(self) -> None:
        shares = [getattr(self, k) for k in KINDS]
        if any(not 0 <= s <= 1 for s in shares) or sum(shares) > 1:
            raise ValueError(f"brownout rates must each be in [0, 1] and sum to at most 1, got {shares}")

    def roll(self, rng: random.Random) -> str | None:
        """A fault's kind, or None for a clean pass-through."""
        x, edge = rng.random(), 0.0
        for kind in KINDS:
            edge += getattr(self, kind)
            if x < edge:
                return kind
        return None


class BrownoutProxy:
    """`with BrownoutProxy(upstream_url, seed=7, hang_s=30) as proxy:` serves proxy.url; proxy.outcomes holds the rolls."""

    def __init__(self, upstream: str, *, rates: Rates | None = None, seed: int = 0, hang_s: float = 30.0,
                 retry_after_s: float = 1.0, lane: Callable[[dict], str] = lambda body: "",
                 host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the brownout proxy forwards to a plain-http upstream, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.rates, self.hang_s, self.retry_after_s = rates or Rates(), hang_s, retry_after_s
        self._seed, self._lane = seed, lane
        self._rngs: dict[str, random.Random] = {}
        self._lock = threading.Lock()
        self._rolls: list[tuple[str, dict]] = []
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, 0), type("BoundBrownout", (_Handler,), {"proxy": self}))
        self._httpd.daemon_threads = True
        self._host = host

    @property
    def url(self) -> str:
        """Base URL without /v1."""
        return f"http://{self._host}:{self._httpd.server_address[1]}"

    @property
    def rolls(self) -> list[tuple[str, dict]]:
        """(outcome, request body) per chat request, in arrival order; the outcome is a fault's kind or "ok"."""
        with self._lock:
            return list(self._rolls)

    @property
    def outcomes(self) -> list[str]:
        """The outcome of each chat request, in arrival order."""
        return [kind for kind, _ in self.rolls]

    def counts(self, which: Callable[[dict], bool] = lambda body: True) -> dict[str, int]:
        """How many chat requests (those whose body `which` picks) got each outcome; "cut" counts both forms."""
        seen = [kind.removesuffix("-closed") for kind, body in self.rolls if which(body)]
        return {k: seen.count(k) for k in (*KINDS, "ok")}

    def _roll(self, body: bytes) -> str | None:
        """A fault's kind (a cut says how: "cut" with a Content-Length it falls short of, "cut-closed" without)."""
        try:
            request = json.loads(body)
        except ValueError:
            request = {}
        request = request if isinstance(request, dict) else {}
        lane = self._lane(request)
        with self._lock:
            rng = self._rngs.setdefault(lane, random.Random(f"{self._seed}:{lane}"))
            kind = self.rates.roll(rng)
            if kind == "cut" and rng.random() < 0.5:
                kind = "cut-closed"
            self._rolls.append((kind or "ok", request))
            return kind

    def __enter__(self) -> BrownoutProxy:
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="brownout", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # wakes the hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    proxy: BrownoutProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._pass("GET", None)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._pass("POST", body)
            return
        kind = self.proxy._roll(body)
        if kind == "rate_limit":
            self._error(429, "rate limit exceeded (brownout)", {"Retry-After": f"{self.proxy.retry_after_s:g}"})
        elif kind == "server_error":
            self._error(500, "internal server error (brownout)")
        elif kind == "hang":
            self.proxy._stopping.wait(self.proxy.hang_s)
            self.close_connection = True  # drop without a word
        elif kind in ("cut", "cut-closed"):
            self._cut(body, declared=kind == "cut")
        else:
            self._pass("POST", body)

    def _upstream(self, method: str, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=600)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            conn.request(method, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def _pass(self, method: str, body: bytes | None) -> None:
        status, headers, data = self._upstream(method, body)
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _cut(self, body: bytes, *, declared: bool) -> None:
        """The upstream's real answer, broken off half way: short of the length it declares, or with none."""
        status, headers, data = self._upstream("POST", body)
        self.send_response(status)
        for k, v in headers:
            if k.lower() in ("content-type", "cache-control"):
                self.send_header(k, v)
        if declared:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        send_json(self, status, {"error": {"message": message, "type": "brownout", "code": status}}, headers)
