"""A loopback proxy between an external agent and the LLM endpoint: it adds the real key and records each call.

The external agent gets a per-run token instead of LLM_API_KEY, so its shell commands cannot read the
real key, and every call's tokens and latency land in the handoff like the built-in agent's do.
It is an allow-list, as the orchestrator's gate built on it is: only `POST /v1/chat/completions` and
`GET /v1/models` pass, by their normalised path (percent-decoding, `//` and dot segments resolved,
the query dropped); only that canonical path goes upstream, and the answer comes back scrubbed of the key.
"""

from __future__ import annotations

import json
import posixpath
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import requests

from agentswarm.agent.contract import LLMCallRecord
from agentswarm.llm import normalize_base_url
from agentswarm.llm.replies import usage_of_bodies
from agentswarm.llm.usage import Usage
from agentswarm.scrubbing import StreamScrub, scrub

_SCAN_CAP = 4 * 1024 * 1024  # bytes of a reply kept to find its usage; the rest is only passed through
_PASSED = {"content-type", "accept", "user-agent"}  # the only request headers that go upstream
ALLOWED = {"/v1/chat/completions": "POST", "/v1/models": "GET"}
MAX_BODY = 16 * 1024 * 1024  # bytes of a request body read
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


@dataclass(frozen=True)
class Refusal:
    """An answer given instead of forwarding."""

    status: int
    message: str
    kind: str = "not_allowed"
    retry_after_s: int | None = None

    def payload(self) -> bytes:
        """The JSON error body, in the OpenAI error shape."""
        return json.dumps({"error": {"message": self.message, "type": self.kind, "code": self.status}}).encode()


def allowed_path(method: str, raw: str, who: str = "agentswarm gate") -> tuple[str, Refusal | None]:
    """(the canonical path, None) for an allowed request, else ("", the refusal)."""
    path = raw.split("#", 1)[0].split("?", 1)[0]
    for _ in range(4):  # %252e%252e is %2e%2e is ..
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        return "", Refusal(403, f"{who}: path {raw[:100]!r} refused (encoded too many times)")
    if _UNSAFE.search(path):
        return "", Refusal(403, f"{who}: path {raw[:100]!r} refused (control characters, spaces or backslashes)")
    path = posixpath.normpath(re.sub("/+", "/", "/" + path)).rstrip("/")
    if path != "/v1" and not path.startswith("/v1/"):
        path = "/v1" + path  # a client that leaves /v1 out of its base URL
    wanted = ALLOWED.get(path)
    only = "only POST /v1/chat/completions and GET /v1/models are served"
    if wanted is None:
        return "", Refusal(404, f"{who}: {path[:100]} is not served ({only})")
    if wanted != method:
        return "", Refusal(405, f"{who}: {method} {path} is not served ({only})")
    return path, None


class LLMProxy:
    """Serves http://127.0.0.1:<port>/v1/... and forwards to the upstream with the real key."""

    name = "agentswarm proxy"

    def __init__(self, upstream: str, api_key: str | None, *, on_call: Callable[[LLMCallRecord], None],
                 timeout_s: float = 300.0) -> None:
        self.upstream = normalize_base_url(upstream)
        self.token = "agentswarm-" + secrets.token_hex(16)
        self._key = api_key
        self._on_call = on_call
        self._timeout_s = timeout_s
        self._session = requests.Session()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The proxy's base URL, with /v1."""
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> LLMProxy:
        handler = type("BoundProxyHandler", (ProxyHandler,), {"proxy": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,), daemon=True,
                                        name="llm-proxy")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self._session.close()

    def open_upstream(self, method: str, path: str, body: bytes | None, incoming: Message) -> tuple[Any, Any]:
        """The upstream's streamed answer and the route it took (None here; the orchestrator's gate routes)."""
        return self._session.request(method, self.upstream + path, data=body, headers=self._upstream_headers(incoming),
                                     stream=True, timeout=self._timeout_s), None

    def close_upstream(self, route: Any, status: int, broken: bool) -> None:
        """Told how a call ended (its status, and whether the answer broke off); the gate frees its slot."""

    def route_name(self, route: Any) -> tuple[str, str]:
        """(endpoint name, model) of a route; this proxy has one upstream and no names."""
        return "", ""

    def serve(self, handler: ProxyHandler, method: str, path: str, body: bytes | None) -> None:
        """Forward one allowed request and stream the answer back, scrubbed of the key; record a chat call."""
        recorded = path == "/v1/chat/completions"
        model = ""
        if recorded:
            try:
                model = str(json.loads(body or b"{}").get("model") or "")
            except (ValueError, AttributeError):
                pass
        started, wall = time.monotonic(), time.time()
        try:
            resp, route = self.open_upstream(method, path, body, handler.headers)
        except requests.RequestException as exc:
            if recorded:
                self._on_call(LLMCallRecord(latency_ms=int((time.monotonic() - started) * 1000), model=model,
                                            ok=False, error=f"upstream unreachable: {type(exc).__name__}",
                                            endpoint=getattr(exc, "endpoint", ""), started_at=wall))
            handler.refuse(Refusal(502, f"{self.name}: upstream unreachable ({type(exc).__name__})", "upstream"))
            return
        endpoint, routed_model = self.route_name(route)
        kept = bytearray()
        broken = False
        ctype = scrub(resp.headers.get("Content-Type", "application/json"), [self._key])
        scrubber = StreamScrub([self._key])
        try:
            handler.send_response(resp.status_code)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.close_connection = True
            for chunk in resp.iter_content(chunk_size=16 * 1024):
                if len(kept) < _SCAN_CAP:
                    kept += chunk
                handler.wfile.write(scrubber.feed(chunk))
                handler.wfile.flush()
            handler.wfile.write(scrubber.finish())
        except requests.RequestException:
            broken = True  # the upstream broke off mid-answer (a dying server)
        except OSError:
            pass  # the agent hung up; the call is still recorded
        finally:
            resp.close()
            self.close_upstream(route, resp.status_code, broken)
        if recorded:
            ok = resp.status_code < 400 and not broken
            # The reply's own usage, or (a server that reports none) an estimate from the texts, so budgets hold.
            usage = usage_of_bodies(body or b"", bytes(kept), ctype) if resp.status_code < 400 else Usage(0, 0)
            error = None if ok else (f"upstream broke off after {len(kept)} bytes" if broken else
                                     f"HTTP {resp.status_code}: {bytes(kept[:300]).decode(errors='replace')}")
            self._on_call(LLMCallRecord(
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                latency_ms=int((time.monotonic() - started) * 1000), model=routed_model or model, ok=ok,
                error=scrub(error, [self._key]) if error else None, endpoint=endpoint, started_at=wall,
                usage_estimated=usage.estimated))

    def _upstream_headers(self, incoming: Message) -> dict[str, str]:
        headers = {k: v for k, v in incoming.items() if k.lower() in _PASSED}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _authorized(self, incoming: Message) -> bool:
        given = (incoming.get("Authorization") or "").removeprefix("Bearer ").strip() or incoming.get("x-api-key")
        return secrets.compare_digest(given or "", self.token)


class ProxyHandler(BaseHTTPRequestHandler):
    proxy: LLMProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._take("GET")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._take("POST")

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        self._take("PUT")

    def do_DELETE(self) -> None:  # noqa: N802 - http.server's naming
        self._take("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802 - http.server's naming
        self._take("PATCH")

    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
        self._take("OPTIONS")

    def _take(self, method: str) -> None:
        """Read, authorise, allow-list; then the proxy serves the request by its canonical path."""
        proxy = self.proxy
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self.refuse(Refusal(413, f"{proxy.name}: a request body is at most {MAX_BODY} bytes"))
            return
        body = self.rfile.read(length) if length else b""
        if not proxy._authorized(self.headers):
            self.refuse(Refusal(401, f"{proxy.name}: bad key", "auth"))
            return
        path, refusal = allowed_path(method, self.path, proxy.name)
        if refusal is not None:
            self.refuse(refusal)
            return
        proxy.serve(self, method, path, body if method == "POST" else None)

    def refuse(self, refusal: Refusal) -> None:
        """Answer with the refusal's JSON error."""
        extra = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s else {}
        self._reply(refusal.status, refusal.payload(), extra)

    def _reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)
