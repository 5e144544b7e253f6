"""A loopback proxy between an external agent and the LLM endpoint: it adds the real key and records each call.

The external agent gets a per-run token instead of LLM_API_KEY, so its shell commands cannot read the
real key, and every call's tokens and latency land in the handoff like the built-in agent's do.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from agentswarm.agent.contract import LLMCallRecord
from agentswarm.llm import normalize_base_url
from agentswarm.llm.replies import usage_of_bodies
from agentswarm.llm.usage import Usage

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length",
        "content-encoding", "host", "authorization", "x-api-key"}
_SCAN_CAP = 4 * 1024 * 1024  # bytes of a reply kept to find its usage; the rest is only passed through


class LLMProxy:
    """Serves http://127.0.0.1:<port>/v1/... and forwards to the upstream with the real key."""

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

    def _upstream_headers(self, incoming: Message) -> dict[str, str]:
        headers = {k: v for k, v in incoming.items() if k.lower() not in _HOP}
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
        self._forward(None)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self._forward(self.rfile.read(length) if length else b"")

    def _forward(self, body: bytes | None) -> None:
        proxy = self.proxy
        if not proxy._authorized(self.headers):
            self._reply(401, b'{"error": {"message": "agentswarm proxy: bad key", "type": "auth"}}')
            return
        path = self.path if self.path.startswith("/v1") else "/v1" + self.path
        recorded = body is not None and path.rstrip("/").endswith("/completions")
        model = ""
        if recorded:
            try:
                model = str(json.loads(body or b"{}").get("model") or "")
            except (ValueError, AttributeError):
                pass
        started, wall = time.monotonic(), time.time()
        try:
            resp, route = proxy.open_upstream("POST" if body is not None else "GET", path, body, self.headers)
        except requests.RequestException as exc:
            if recorded:
                proxy._on_call(LLMCallRecord(latency_ms=int((time.monotonic() - started) * 1000), model=model,
                                             ok=False, error=f"upstream unreachable: {type(exc).__name__}",
                                             endpoint=getattr(exc, "endpoint", ""), started_at=wall))
            self._reply(502, json.dumps({"error": {"message": f"agentswarm proxy: upstream unreachable "
                                                              f"({type(exc).__name__})"}}).encode())
            return
        endpoint, routed_model = proxy.route_name(route)
        kept = bytearray()
        broken = False
        ctype = resp.headers.get("Content-Type", "application/json")
        try:
            self.send_response(resp.status_code)
            self.send_header("Content-Type", ctype)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for chunk in resp.iter_content(chunk_size=16 * 1024):
                if len(kept) < _SCAN_CAP:
                    kept += chunk
                self.wfile.write(chunk)
                self.wfile.flush()
        except requests.RequestException:
            broken = True  # the upstream broke off mid-answer (a dying server)
        except OSError:
            pass  # the agent hung up; the call is still recorded
        finally:
            resp.close()
            proxy.close_upstream(route, resp.status_code, broken)
        if recorded:
            ok = resp.status_code < 400 and not broken
            # The reply's own usage, or (a server that reports none) an estimate from the texts, so budgets hold.
            usage = usage_of_bodies(body or b"", bytes(kept), ctype) if resp.status_code < 400 else Usage(0, 0)
            error = None if ok else (f"upstream broke off after {len(kept)} bytes" if broken else
                                     f"HTTP {resp.status_code}: {bytes(kept[:300]).decode(errors='replace')}")
            proxy._on_call(LLMCallRecord(
                prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                latency_ms=int((time.monotonic() - started) * 1000), model=routed_model or model, ok=ok, error=error,
                endpoint=endpoint, started_at=wall, usage_estimated=usage.estimated))

    def _reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
