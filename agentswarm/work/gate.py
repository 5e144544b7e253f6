"""The orchestrator's end of a sandbox's model access: a Unix socket, the real key, every call counted here.

A sandbox has no network. Its runner reaches the model only through this gate, whose socket is
bound into the sandbox; the gate accepts a per-sandbox token, adds the real key upstream and
records each call (tokens, latency, errors). These records, not the agent's own account, are what
the run's accounting stores: a sandbox cannot under-report what it spent.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import tempfile
import threading
import time
from email.message import Message
from pathlib import Path
from typing import Any

import requests

from agentswarm.agent.contract import GATE_SLOT_PATH, SLOT_HEADER, LLMCallRecord
from agentswarm.agent.llmproxy import LLMProxy, ProxyHandler
from agentswarm.llm.endpoints import Settings
from agentswarm.llm.router import STARTING, Lease, NoEndpoint, Router

_slot_lock = threading.Lock()
_slot_pools: dict[int, threading.BoundedSemaphore] = {}


def check_slots(n: int) -> threading.BoundedSemaphore:
    """The process-wide pool of presubmit slots of size n (shared by every sandbox of this worker)."""
    with _slot_lock:
        return _slot_pools.setdefault(n, threading.BoundedSemaphore(n))


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class GateHandler(ProxyHandler):
    """The proxy's handler, plus the presubmit slot: granted, held while the sandbox keeps the connection open."""

    proxy: LLMGate

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != GATE_SLOT_PATH:
            super().do_POST()
            return
        self.close_connection = True
        if not self.proxy._authorized(self.headers):
            self._reply(401, b'{"error": {"message": "agentswarm gate: bad key", "type": "auth"}}')
            return
        pool = self.proxy.slots
        if pool is None or not pool.acquire(timeout=self.proxy.slot_wait_s):
            self._reply(200 if pool is None else 503, b"{}")
            return
        try:
            self.send_response(200)
            self.send_header(SLOT_HEADER, "granted")  # in the headers: the sandbox needs read no body
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
            self.connection.settimeout(self.proxy.slot_hold_s)
            while self.connection.recv(4096):  # until the sandbox hangs up (or dies)
                pass
        except OSError:
            pass
        finally:
            pool.release()


class LLMGate(LLMProxy):
    """`with LLMGate(upstream, key) as gate:` serves gate.socket_path; gate.calls holds what passed.

    With `slots`, it also hands out presubmit slots from that (process-wide) pool.
    """

    def __init__(self, upstream: str | None, api_key: str | None, *, timeout_s: float = 300.0,
                 slots: threading.BoundedSemaphore | None = None, slot_wait_s: float = 600.0,
                 slot_hold_s: float = 900.0, router: Router | None = None, settings: Settings | None = None,
                 max_retries: int = 4) -> None:
        self.slots, self.slot_wait_s, self.slot_hold_s = slots, slot_wait_s, slot_hold_s
        self.calls: list[LLMCallRecord] = []
        self._calls_lock = threading.Lock()
        # With a router, each call goes to the first worker endpoint with room, with that endpoint's key.
        self.router, self._settings, self._max_retries = router, settings, max_retries
        if router is not None:
            upstream, api_key = router.endpoints[0].base_url, None
        assert upstream, "a gate needs an upstream or a router"
        super().__init__(upstream, api_key, on_call=self._record, timeout_s=timeout_s)
        # A short path (AF_UNIX allows ~107 bytes), traversable by the sandbox's user but not listable.
        self.directory = Path(tempfile.mkdtemp(prefix="as-gate-"))
        self.directory.chmod(0o711)
        self.socket_path = str(self.directory / "gate.sock")
        self._server: _UnixHTTPServer | None = None

    def open_upstream(self, method: str, path: str, body: bytes | None, incoming: Message) -> tuple[Any, Any]:
        """Routed: a lease on the first worker endpoint with room; a failed one is left for the next."""
        if self.router is None:
            return super().open_upstream(method, path, body, incoming)
        last: requests.RequestException | None = None
        attempts = self._max_retries + len(self.router.endpoints)
        for i in range(attempts):
            try:
                lease = self.router.lease("worker")
            except NoEndpoint as exc:  # every endpoint full or failing for the whole wait: a 502 to the agent
                raise requests.ConnectionError(str(exc)) from None
            ep = lease.endpoint
            headers = {k: v for k, v in self._upstream_headers(incoming).items() if k.lower() != "authorization"}
            key = ep.key(self._settings)  # read now, sent upstream only
            if key:
                headers["Authorization"] = f"Bearer {key}"
            data = _with_model(body, ep.model)
            until = time.monotonic() + lease.timeout_s
            pause = 1.0
            while True:
                try:
                    resp = self._session.request(method, ep.base_url + path, data=data, headers=headers,
                                                 stream=True, timeout=lease.timeout_s)
                except requests.RequestException as exc:
                    self.router.done(lease, False)
                    exc.endpoint = ep.name  # type: ignore[attr-defined]
                    last = exc
                    if i + 1 < attempts:  # the last failure is recorded by the handler
                        self._failed_over(lease, path, body, f"upstream unreachable: {type(exc).__name__}")
                    break
                if lease.cold and resp.status_code in STARTING and time.monotonic() + pause < until:
                    resp.close()  # a serverless endpoint still starting: wait for it, within its cold limit
                    time.sleep(pause)
                    pause = min(pause * 2, 15.0)
                    continue
                if (resp.status_code >= 500 or resp.status_code == 429) and i + 1 < attempts:
                    resp.close()
                    self.router.done(lease, False)
                    self._failed_over(lease, path, body, f"HTTP {resp.status_code}")
                    break
                return resp, lease
        assert last is not None or attempts == 0
        raise last or requests.ConnectionError("no endpoint answered")

    def _failed_over(self, lease: Lease, path: str, body: bytes | None, error: str) -> None:
        """Record a chat call an endpoint failed before the gate took it to the next one."""
        if body is not None and path.rstrip("/").endswith("/completions"):
            self._on_call(LLMCallRecord(latency_ms=int((time.time() - lease.started_at) * 1000),
                                        model=lease.endpoint.model, ok=False, error=f"{error}; failed over",
                                        endpoint=lease.endpoint.name, started_at=lease.started_at))

    def close_upstream(self, route: Any, status: int, broken: bool) -> None:
        """Free the lease: a 5xx, a 429 or a broken answer opens the endpoint's circuit, a success closes it."""
        if isinstance(route, Lease) and self.router is not None:
            failed = broken or status >= 500 or status == 429
            self.router.done(route, False if failed else (True if status < 400 else None))

    def route_name(self, route: Any) -> tuple[str, str]:
        """(endpoint name, model) of a lease."""
        return (route.endpoint.name, route.endpoint.model) if isinstance(route, Lease) else ("", "")

    def _record(self, call: LLMCallRecord) -> None:
        with self._calls_lock:
            self.calls.append(call)

    def __enter__(self) -> LLMGate:
        handler = type("BoundGateHandler", (GateHandler,), {"proxy": self})
        self._server = _UnixHTTPServer(self.socket_path, handler)
        os.chmod(self.socket_path, 0o666)  # the sandbox's user connects; the token still guards the calls
        threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True, name="llm-gate").start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._session.close()
        self.remove()

    def remove(self) -> None:
        """Delete the socket's directory (idempotent; also when the gate was never started)."""
        shutil.rmtree(self.directory, ignore_errors=True)


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
