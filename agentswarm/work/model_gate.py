"""The orchestrator's end of a sandbox's model access: a Unix socket, the real key, every call counted here.

A sandbox has no network. Its runner reaches the model only through this gate, whose socket is
bound into the sandbox; the gate accepts a per-sandbox token, adds the real key upstream and
records each call (tokens, latency, errors). These records, not the agent's own account, are what
the run's accounting stores: a sandbox cannot under-report what it spent.

It is an allow-list with a budget, not a forwarder: only `POST /v1/chat/completions` and
`GET /v1/models` pass (agent/llmproxy.allowed_path), max_tokens is capped, the sandbox's calls,
tokens and dollars and its calls a minute are limited (work/gate_limits), every forwarded attempt
is recorded (failed ones, retries and the model list too: the budgets count them), a cut or empty
answer is retried like a 5xx (work/gate_upstream), and what comes back (body and headers) is
scrubbed of every secret the orchestrator knows before the sandbox sees it. A sandbox holds at most
one presubmit slot at a time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socketserver
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from agentswarm.agent.contract import GATE_SLOT_PATH, SLOT_HEADER, LLMCallRecord
from agentswarm.agent.llmproxy import LLMProxy, ProxyHandler, Refusal
from agentswarm.llm.costs import gpu_cost, token_cost
from agentswarm.llm.endpoints import Settings
from agentswarm.llm.replies import usage_of_bodies
from agentswarm.llm.router import Lease, Router
from agentswarm.llm.usage import Usage
from agentswarm.scrubbing import StreamScrub, scrub
from agentswarm.work.model_gate_limits import Budget, GateLimits, Spent, capped_body
from agentswarm.work.model_gate_upstream import Answer, GateUpstreamError, Upstream

_slot_lock = threading.Lock()
_slot_pools: dict[int, threading.BoundedSemaphore] = {}
_SCAN_CAP = 4 * 1024 * 1024  # bytes of a streamed answer kept to find its usage
_FINISHED = re.compile(rb'data: \[DONE\]|"finish_reason"\s*:\s*"')


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
            self.refuse(Refusal(401, "agentswarm gate: bad key", "auth"))
            return
        pool = self.proxy.slots
        if pool is None:
            self._reply(200, b"{}")
            return
        # One slot per sandbox: a second, while the first is held, is refused (the checks then run unpaced).
        if not self.proxy._slot_held.acquire(blocking=False):
            self.refuse(Refusal(409, "agentswarm gate: this sandbox already holds a presubmit slot", "slot_held"))
            return
        try:
            if not pool.acquire(timeout=self.proxy.slot_wait_s):
                self._reply(503, b"{}")
                return
            try:
                self._hold()
            finally:
                pool.release()
        finally:
            self.proxy._slot_held.release()

    def _hold(self) -> None:
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


class LLMGate(LLMProxy):
    """`with LLMGate(upstream, key) as gate:` serves gate.socket_path; gate.calls holds what passed.

    With `slots`, it also hands out presubmit slots from that (process-wide) pool; `limits` bound what
    this one sandbox may ask (GateLimits.from_settings for a swarm's).
    """

    name = "agentswarm gate"

    def __init__(self, upstream: str | None, api_key: str | None, *, timeout_s: float = 300.0,
                 slots: threading.BoundedSemaphore | None = None, slot_wait_s: float = 600.0,
                 slot_hold_s: float = 900.0, router: Router | None = None, settings: Settings | None = None,
                 max_retries: int = 4, limits: GateLimits | None = None, retry_pause_s: float = 0.5) -> None:
        self.slots, self.slot_wait_s, self.slot_hold_s = slots, slot_wait_s, slot_hold_s
        self._slot_held = threading.Lock()
        self.calls: list[LLMCallRecord] = []
        self._calls_lock = threading.Lock()
        self.limits = limits or GateLimits()
        self.budget = Budget(self.limits)
        self._ticket = threading.local()
        # With a router, each call goes to the first worker endpoint with room, with that endpoint's key.
        self.router, self._settings = router, settings
        if router is not None:
            upstream, api_key = router.endpoints[0].base_url, None
        assert upstream, "a gate needs an upstream or a router"
        super().__init__(upstream, api_key, on_call=self._record, timeout_s=timeout_s)
        self.upstream_calls = Upstream(self._session, self.upstream, self._upstream_headers, router=router,
                                       settings=settings, timeout_s=timeout_s, max_retries=max_retries,
                                       pause_s=retry_pause_s, failed=self._failed)
        known = settings.secrets() if hasattr(settings, "secrets") else []  # type: ignore[union-attr]
        self._secrets = [*known, *(ep.key(settings) for ep in (router.endpoints if router else []))]
        # A short path (AF_UNIX allows ~107 bytes), traversable by the sandbox's user but not listable.
        self.directory = Path(tempfile.mkdtemp(prefix="as-gate-"))
        self.directory.chmod(0o711)
        self.socket_path = str(self.directory / "gate.sock")
        self._server: _UnixHTTPServer | None = None

    def spent(self) -> Spent:
        """What this sandbox has used so far (calls, tokens, dollars)."""
        return self.budget.spent()

    def serve(self, handler: ProxyHandler, method: str, path: str, body: bytes | None) -> None:
        """Admit (budget, rate), cap, send with retries, answer scrubbed, record."""
        ticket = self.budget.admit()
        if isinstance(ticket, Refusal):
            handler.refuse(ticket)
            return
        self._ticket.current = ticket  # charged by the first attempt recorded on this thread
        try:
            self._serve(handler, method, path, body)
        finally:
            self._ticket.current = None
            self.budget.settle(ticket)

    def _serve(self, handler: ProxyHandler, method: str, path: str, body: bytes | None) -> None:
        streamed = False
        if body is not None:
            capped = capped_body(body, self.limits, self.budget.tokens_left())
            if isinstance(capped, Refusal):
                handler.refuse(capped)
                return
            body = capped
            streamed = json.loads(body).get("stream") is True
        try:
            answer = self.upstream_calls.exchange(method, path, body, handler.headers, streamed)
        except GateUpstreamError as exc:
            handler.refuse(Refusal(502, scrub(f"agentswarm gate: {exc}", self._secrets_for(None)), "upstream"))
            return
        self._answer(handler, answer, path, body)

    def _answer(self, handler: ProxyHandler, answer: Answer, path: str, body: bytes | None) -> None:
        """Send the answer scrubbed (a stream piece by piece), free its lease, record the call."""
        secrets = self._secrets_for(answer.route)
        kept, broken = bytearray(answer.content or answer.first), False
        if answer.content is not None:  # recorded before the agent has its answer (a stream: before it ends)
            self.close_upstream(answer.route, answer.status, False)
            self._record_answer(answer, path, body, answer.content, False)
        try:
            handler.send_response(answer.status)
            handler.send_header("Content-Type", scrub(answer.content_type, secrets))
            if answer.retry_after:
                handler.send_header("Retry-After", answer.retry_after)
            handler.send_header("Connection", "close")
            handler.close_connection = True
            if answer.content is not None:
                payload = scrub(answer.content.decode("utf-8", "surrogateescape"), secrets)
                raw = payload.encode("utf-8", "surrogateescape")
                handler.send_header("Content-Length", str(len(raw)))
                handler.end_headers()
                handler.wfile.write(raw)
            else:
                handler.end_headers()
                broken = self._stream(handler, answer, StreamScrub(secrets), kept)
        except OSError:
            pass  # the agent hung up; the call is still recorded
        finally:
            if answer.resp is not None:
                answer.resp.close()
        if answer.content is None:
            self.close_upstream(answer.route, answer.status, broken)
            self._record_answer(answer, path, body, bytes(kept), broken)

    def _stream(self, handler: ProxyHandler, answer: Answer, scrubber: StreamScrub, kept: bytearray) -> bool:
        """Pass a streamed answer through the scrubber; True when it broke off (or ended without finishing)."""
        tail = bytes(answer.first[-4096:])
        handler.wfile.write(scrubber.feed(answer.first))
        try:
            for chunk in answer.chunks or ():
                if len(kept) < _SCAN_CAP:
                    kept += chunk
                tail = (tail + chunk)[-4096:]
                handler.wfile.write(scrubber.feed(chunk))
                handler.wfile.flush()
        except requests.RequestException:
            handler.wfile.write(scrubber.finish())
            return True  # the upstream broke off mid-answer (a dying server)
        handler.wfile.write(scrubber.finish())
        return answer.status < 400 and not (_FINISHED.search(tail) or _FINISHED.search(bytes(kept[-65536:])))

    def _record_answer(self, answer: Answer, path: str, body: bytes | None, kept: bytes, broken: bool) -> None:
        ok = answer.status < 400 and not broken
        chat = path == "/v1/chat/completions"
        usage = usage_of_bodies(body or b"", kept, answer.content_type) if ok and chat else Usage(0, 0)
        error = None if ok else (f"upstream broke off after {len(kept)} bytes" if broken else
                                 f"HTTP {answer.status}: {kept[:300].decode(errors='replace')}")
        self._record_call(answer.route, answer.started, answer.wall, ok, error, usage, body)

    def _failed(self, route: Lease | None, started: float, wall: float, error: str) -> None:
        """An attempt that gave no answer (told by the upstream side, which retries it)."""
        self._record_call(route, started, wall, False, error, Usage(0, 0), None)

    def _record_call(self, route: Lease | None, started: float, wall: float, ok: bool, error: str | None,
                     usage: Usage, body: bytes | None) -> None:
        latency_s = time.monotonic() - started
        model = route.endpoint.model if route is not None else _model_of(body)
        self._record(LLMCallRecord(
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            latency_ms=int(latency_s * 1000), model=model, ok=ok,
            error=scrub(error, self._secrets_for(route)) if error else None,
            endpoint=route.endpoint.name if route is not None else "", started_at=wall,
            usage_estimated=usage.estimated))
        self.budget.charge(usage.prompt_tokens + usage.completion_tokens, self._cost(route, usage, latency_s),
                           getattr(self._ticket, "current", None))

    def _cost(self, route: Lease | None, usage: Usage, latency_s: float) -> float:
        """Dollars of one call: its endpoint's token prices, or its time on one of a GPU endpoint's slots."""
        if route is None:
            s = self._settings
            gpu = float(getattr(s, "llm_gpu_price_per_hour", 0.0) or 0.0)
            if gpu:
                return gpu_cost(latency_s, gpu)
            return token_cost(usage.prompt_tokens, usage.completion_tokens,
                              float(getattr(s, "llm_price_in_per_mtok", 0.0) or 0.0),
                              float(getattr(s, "llm_price_out_per_mtok", 0.0) or 0.0))
        ep = route.endpoint
        if ep.gpu_priced:
            return gpu_cost(latency_s, ep.gpu_price_per_hour, ep.gpus) / max(1, ep.max_concurrency)
        return token_cost(usage.prompt_tokens, usage.completion_tokens, ep.price_in_per_mtok, ep.price_out_per_mtok)

    def _secrets_for(self, route: Lease | None) -> list[str | None]:
        """Every secret the orchestrator knows, and the key this call used (read now: keys rotate)."""
        return [*self._secrets, self._key, route.endpoint.key(self._settings) if route is not None else None]

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


def _model_of(body: bytes | None) -> str:
    try:
        return str(json.loads(body or b"{}").get("model") or "")
    except (ValueError, AttributeError):
        return ""
