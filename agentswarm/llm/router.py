"""Routing calls over LLM_ENDPOINTS: fill the first endpoint up to its concurrency, overflow to the next.

An endpoint that fails (connection error, 5xx, 429, timeout, or a 200 that is not a usable answer: cut, not
JSON, empty) has its circuit opened for a backoff (at least its Retry-After) and the call goes to the next
one; after the backoff one caller probes it (half-open) and a success closes it. Every outcome of a probe
frees it, and a probe nobody ends (its process died) expires after the endpoint's backoff: no path leaves an
endpoint unusable for longer than its backoff. A
cold endpoint (cold_start_s set, no answer within warm_for_s) gets cold_start_s as its limit, and a 502/503/
504 while it starts is asked again there until that limit. Slots and circuits live in a RoutingState (Redis
for a swarm) so the limits hold across every thread and process. Keys are read at call time, never kept.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from agentswarm.llm import LLMClient
from agentswarm.llm.endpoints import Endpoint, Settings, for_role
from agentswarm.llm.replies import (
    ChatReply,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMProtocolError,
    LLMTimeout,
)
from agentswarm.llm.routing_state import RoutingState

log = logging.getLogger("agentswarm.llm.router")
SLOT_MARGIN_S = 30.0  # a lease outlives its call's limit by this much before another process may reuse it
MIN_WAIT_S = 60.0  # the least a call waits for a slot or a closed circuit before NoEndpoint
STARTING = frozenset({502, 503, 504})  # what serverless gateways answer while a worker starts


class NoEndpoint(LLMConnectionError):
    """No endpoint serving the role had a free slot and a closed circuit within the wait."""


@dataclass
class Lease:
    """One slot on one endpoint, held for one call."""

    endpoint: Endpoint
    token: str
    timeout_s: float
    cold: bool
    probe: bool
    started_at: float  # wall clock (time.time()) when the slot was taken


class Router:
    """Hands out leases on the endpoints in order; told how each call ended, it opens and closes circuits."""

    def __init__(self, endpoints: list[Endpoint], state: RoutingState, *, default_timeout_s: float = 300.0,
                 wait_s: float | None = None, poll_s: float = 0.05) -> None:
        if not endpoints:
            raise ValueError("a router needs at least one endpoint")
        self.endpoints, self.state = list(endpoints), state
        self.default_timeout_s, self.poll_s = default_timeout_s, poll_s
        # Long enough to outlast a few backoffs of a lone failing endpoint, and a full slot's call.
        self.wait_s = max(default_timeout_s, MIN_WAIT_S) if wait_s is None else wait_s

    def timeout_for(self, ep: Endpoint, cold: bool) -> float:
        """The limit of a call: the endpoint's (or the default), or its cold-start limit while it is cold."""
        warm = ep.timeout_s or self.default_timeout_s
        return max(warm, ep.cold_start_s) if cold else warm

    def try_lease(self, role: str) -> Lease | None:
        """A slot on the first endpoint serving `role` that has room and a closed (or probed) circuit."""
        for ep in for_role(self.endpoints, role):
            circuit = self.state.circuit(ep.state_key)
            if circuit == "open":
                continue
            cold = ep.cold_start_s > 0 and not self.state.is_warm(ep.state_key)
            timeout = self.timeout_for(ep, cold)
            token = secrets.token_hex(8)
            if not self.state.take_slot(ep.state_key, ep.max_concurrency, token, timeout + SLOT_MARGIN_S):
                continue
            probe = circuit == "half-open"
            # A probe outliving the backoff gives way to another caller's: a dead prober never stalls the endpoint.
            if probe and not self.state.take_probe(ep.state_key, token, min(timeout + SLOT_MARGIN_S, ep.backoff_s)):
                self.state.free_slot(ep.state_key, token)
                continue
            return Lease(ep, token, timeout, cold, probe, time.time())
        return None

    def lease(self, role: str, wait_s: float | None = None) -> Lease:
        """Wait (up to wait_s) for a slot; NoEndpoint when none came."""
        if not for_role(self.endpoints, role):
            raise NoEndpoint(f"no LLM endpoint serves the {role} role (see LLM_ENDPOINTS roles)")
        deadline = time.monotonic() + (self.wait_s if wait_s is None else wait_s)
        while True:
            got = self.try_lease(role)
            if got is not None:
                return got
            if time.monotonic() >= deadline:
                raise NoEndpoint(f"no LLM endpoint for the {role} role within {self.wait_s:g}s: "
                                 + "; ".join(f"{s['name']} {s['circuit']} {s['in_use']}/{s['max_concurrency']}"
                                             for s in self.snapshot(role)))
            time.sleep(self.poll_s)

    def done(self, lease: Lease, ok: bool | None, *, retry_after_s: float | None = None) -> None:
        """Free the slot (and the probe); ok True closes the circuit, False opens it (for at least the endpoint's
        Retry-After), None (the request's own fault) neither."""
        ep = lease.endpoint
        self.state.free_slot(ep.state_key, lease.token)
        if ok:
            self.state.succeeded(ep.state_key, ep.warm_for_s)
        elif ok is False:
            seconds = self.state.failed(ep.state_key, ep.backoff_s, retry_after_s or 0.0)
            log.warning("LLM endpoint %s failed: circuit open for %.1fs", ep.name, seconds)
        elif lease.probe:
            self.state.release_probe(ep.state_key, lease.token)

    def snapshot(self, role: str | None = None) -> list[dict[str, Any]]:
        """Each endpoint's slots in use, limit, circuit and warmth (for status and doctor)."""
        eps = self.endpoints if role is None else for_role(self.endpoints, role)
        return [{"name": ep.name, "in_use": self.state.in_use(ep.state_key), "max_concurrency": ep.max_concurrency,
                 "circuit": self.state.circuit(ep.state_key), "warm": self.state.is_warm(ep.state_key)} for ep in eps]

    def state_of(self, name: str) -> dict[str, Any]:
        """One endpoint's entry of `snapshot`."""
        return next(s for s in self.snapshot() if s["name"] == name)


def outcome_of(exc: BaseException) -> bool | None:
    """For Router.done: False when the endpoint failed (open its circuit), None when the request did.

    A protocol error (a 200 cut off, not JSON, or not a completion) is the endpoint's failure: a server that
    answers so is dying or overloaded, and asking it again at once would get the same.
    """
    if isinstance(exc, LLMHTTPError):
        return False if exc.status == 429 or (exc.status or 0) >= 500 else None
    if isinstance(exc, LLMTimeout | LLMConnectionError | LLMProtocolError):
        return False
    return None


class RoutedClient:
    """The LLMClient interface (chat, models, model) over a Router, for one role."""

    def __init__(self, router: Router, role: str, *, settings: Settings | None = None, max_retries: int = 4) -> None:
        served = for_role(router.endpoints, role)
        if not served:
            raise ValueError(f"no LLM endpoint serves the {role} role (see LLM_ENDPOINTS roles)")
        self.router, self.role, self.settings, self.max_retries = router, role, settings, max_retries
        self.model = served[0].model
        self._clients: dict[tuple[str, float], tuple[str | None, LLMClient]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RoutedClient(role={self.role!r}, endpoints={[e.name for e in self.router.endpoints]})"

    def close(self) -> None:
        """Release every pooled connection."""
        with self._lock:
            for _, client in self._clients.values():
                client.close()
            self._clients.clear()

    def _client(self, ep: Endpoint, timeout_s: float) -> LLMClient:
        key = ep.key(self.settings)  # read now: a rotated key is used from the next call on
        with self._lock:
            held = self._clients.get((ep.name, timeout_s))
            if held is None or held[0] != key:
                if held is not None:
                    held[1].close()
                held = (key, LLMClient(ep.base_url, key, ep.model, timeout_s=timeout_s, max_retries=0))
                self._clients[(ep.name, timeout_s)] = held
            return held[1]

    def models(self) -> list[str]:
        """The first endpoint's model ids."""
        lease = self.router.lease(self.role)
        try:
            result = self._client(lease.endpoint, lease.timeout_s).models()
        except LLMError as exc:
            self.router.done(lease, outcome_of(exc))
            raise
        self.router.done(lease, True)
        return result

    def chat(self, messages: list[dict], **kwargs: Any) -> ChatReply:
        """One chat completion on the first endpoint with room, failing over as the circuits say."""
        attempts = self.max_retries + len(for_role(self.router.endpoints, self.role))
        last: LLMError | None = None
        failovers: list[dict] = []  # each failed attempt before the last: endpoint, model, start, latency, error
        for _ in range(attempts):
            try:
                lease = self.router.lease(self.role)
            except NoEndpoint as exc:  # every endpoint full or failing for the whole wait
                exc.failovers = failovers + ([last.failed_attempt] if last is not None else [])  # type: ignore[attr-defined]
                raise
            try:
                reply = self._on(lease, messages, kwargs)
            except LLMError as exc:
                verdict = outcome_of(exc)
                self.router.done(lease, verdict, retry_after_s=getattr(exc, "retry_after", None))
                if last is not None:
                    failovers.append(last.failed_attempt)  # type: ignore[attr-defined]
                    last = None
                exc.endpoint, exc.started_at = lease.endpoint.name, lease.started_at  # type: ignore[attr-defined]
                exc.failovers = failovers  # type: ignore[attr-defined]
                if verdict is None:
                    raise
                exc.failed_attempt = {  # type: ignore[attr-defined]
                    "endpoint": lease.endpoint.name, "model": lease.endpoint.model, "started_at": lease.started_at,
                    "latency_ms": int((time.time() - lease.started_at) * 1000), "error": f"{type(exc).__name__}: {exc}"}
                last = exc  # asked again after the backoff, on the next endpoint with a closed circuit
                continue
            except BaseException:
                self.router.done(lease, None)
                raise
            self.router.done(lease, True)
            if last is not None:
                failovers.append(last.failed_attempt)  # type: ignore[attr-defined]
            reply.endpoint, reply.started_at, reply.failovers = lease.endpoint.name, lease.started_at, failovers
            return reply
        assert last is not None
        raise last  # its failovers: the attempts before it

    def _on(self, lease: Lease, messages: list[dict], kwargs: dict) -> ChatReply:
        """The call on the lease's endpoint; a starting (cold) endpoint's 502/503/504 is asked again."""
        client = self._client(lease.endpoint, lease.timeout_s)
        until = time.monotonic() + lease.timeout_s
        pause = 1.0
        while True:
            try:
                return client.chat(messages, **kwargs)
            except LLMHTTPError as exc:
                if not (lease.cold and exc.status in STARTING and time.monotonic() + pause < until):
                    raise
                log.info("LLM endpoint %s is starting (HTTP %s); asking again in %.0fs",
                         lease.endpoint.name, exc.status, pause)
                time.sleep(pause)
                pause = min(pause * 2, 15.0)
