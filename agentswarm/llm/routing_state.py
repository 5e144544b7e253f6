"""Where the router keeps its shared state: slots in use and circuits, in Redis (every process) or in memory.

Slots: a sorted set per endpoint whose members are leases scored by their expiry (Redis server time), so a
worker killed mid-call leaks its slot only until the lease expires. A circuit per endpoint: `open` (a key
that expires after the backoff), then half-open (failures recorded, `open` gone: one caller wins the probe
key and tries), then closed (a success clears all three). A probe ends in one of three ways, each of which
frees the probe key at once: success (closed), failure (open again, for longer) or neither (released: the
next caller probes). Its key also expires by itself (the router gives it no more than the endpoint's backoff),
so a prober that dies never leaves the endpoint unusable longer than that. `warm` marks an endpoint that
answered lately.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis

PREFIX = "agentswarm:llm:"
MAX_DOUBLINGS = 5  # a circuit's backoff grows to at most 32 times the endpoint's backoff_s
MAX_RETRY_AFTER_S = 300.0  # the longest an endpoint's own Retry-After may keep its circuit open

_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
  return 1
end
return 0
"""

_RELEASE_PROBE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_IN_USE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class RoutingState(Protocol):
    """Slots and circuits of the endpoints, by name."""

    def take_slot(self, name: str, limit: int, token: str, ttl_s: float) -> bool: ...
    def free_slot(self, name: str, token: str) -> None: ...
    def in_use(self, name: str) -> int: ...
    def circuit(self, name: str) -> str: ...  # "closed" | "open" | "half-open"
    def take_probe(self, name: str, token: str, ttl_s: float) -> bool: ...
    def release_probe(self, name: str, token: str) -> None: ...
    def failed(self, name: str, backoff_s: float, at_least_s: float = 0.0) -> float: ...  # seconds now open for
    def succeeded(self, name: str, warm_for_s: float) -> None: ...
    def is_warm(self, name: str) -> bool: ...


def _open_for(backoff_s: float, fails: int, at_least_s: float = 0.0) -> float:
    """The backoff doubled for each failure in a row, or the endpoint's own Retry-After (capped) if longer."""
    return max(backoff_s * 2 ** min(MAX_DOUBLINGS, max(0, fails - 1)), min(at_least_s, MAX_RETRY_AFTER_S))


class RedisRoutingState:
    """The state in Redis: shared by every thread and process that routes to the same endpoints."""

    def __init__(self, client: redis.Redis, prefix: str = PREFIX) -> None:
        self.r, self.prefix = client, prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._in_use = client.register_script(_IN_USE)
        self._release_probe = client.register_script(_RELEASE_PROBE)

    def _k(self, what: str, name: str) -> str:
        return f"{self.prefix}{what}:{name}"

    def take_slot(self, name: str, limit: int, token: str, ttl_s: float) -> bool:
        """Take one of `limit` slots for `ttl_s` seconds at most; False when all are taken."""
        return bool(self._acquire(keys=[self._k("slots", name)], args=[limit, int(ttl_s * 1000), token]))

    def free_slot(self, name: str, token: str) -> None:
        """Give a slot back (a no-op once it expired)."""
        self.r.zrem(self._k("slots", name), token)

    def in_use(self, name: str) -> int:
        """Slots held now (expired leases dropped)."""
        return int(self._in_use(keys=[self._k("slots", name)]))

    def circuit(self, name: str) -> str:
        """closed, open or half-open."""
        opened, fails = self.r.mget(self._k("open", name), self._k("fails", name))
        if opened:
            return "open"
        return "half-open" if fails and int(fails) > 0 else "closed"

    def take_probe(self, name: str, token: str, ttl_s: float) -> bool:
        """One caller at a time may try a half-open endpoint."""
        return bool(self.r.set(self._k("probe", name), token, nx=True, px=max(1, int(ttl_s * 1000))))

    def release_probe(self, name: str, token: str) -> None:
        """The probe ended in neither success nor failure: the next caller may probe (a no-op if not ours)."""
        self._release_probe(keys=[self._k("probe", name)], args=[token])

    def failed(self, name: str, backoff_s: float, at_least_s: float = 0.0) -> float:
        """Open the circuit for the backoff, doubled for each failure in a row (or at least `at_least_s`)."""
        pipe = self.r.pipeline()
        pipe.incr(self._k("fails", name))
        pipe.expire(self._k("fails", name), 24 * 3600)
        fails = int(pipe.execute()[0])
        seconds = _open_for(backoff_s, fails, at_least_s)
        pipe = self.r.pipeline()
        pipe.set(self._k("open", name), fails, px=max(1, int(seconds * 1000)))
        pipe.delete(self._k("probe", name))
        pipe.execute()
        return seconds

    def succeeded(self, name: str, warm_for_s: float) -> None:
        """Close the circuit and mark the endpoint warm."""
        pipe = self.r.pipeline()
        pipe.delete(self._k("fails", name), self._k("open", name), self._k("probe", name))
        pipe.set(self._k("warm", name), 1, px=max(1, int(warm_for_s * 1000)))
        pipe.execute()

    def is_warm(self, name: str) -> bool:
        """Answered within its warm_for_s."""
        return bool(self.r.exists(self._k("warm", name)))


class LocalRoutingState:
    """The same state in this process only (no Redis: one-process tools, `llm-check`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, dict[str, float]] = {}
        self._open: dict[str, float] = {}
        self._fails: dict[str, int] = {}
        self._probe: dict[str, tuple[float, str]] = {}  # name: (expiry, holder's token)
        self._warm: dict[str, float] = {}

    def take_slot(self, name: str, limit: int, token: str, ttl_s: float) -> bool:
        """Take one of `limit` slots for `ttl_s` seconds at most."""
        now = time.monotonic()
        with self._lock:
            held = {t: e for t, e in self._slots.get(name, {}).items() if e > now}
            self._slots[name] = held
            if len(held) >= limit:
                return False
            held[token] = now + ttl_s
            return True

    def free_slot(self, name: str, token: str) -> None:
        """Give a slot back."""
        with self._lock:
            self._slots.get(name, {}).pop(token, None)

    def in_use(self, name: str) -> int:
        """Slots held now."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for e in self._slots.get(name, {}).values() if e > now)

    def circuit(self, name: str) -> str:
        """closed, open or half-open."""
        with self._lock:
            if self._open.get(name, 0) > time.monotonic():
                return "open"
            return "half-open" if self._fails.get(name) else "closed"

    def take_probe(self, name: str, token: str, ttl_s: float) -> bool:
        """One caller at a time may try a half-open endpoint."""
        now = time.monotonic()
        with self._lock:
            if self._probe.get(name, (0.0, ""))[0] > now:
                return False
            self._probe[name] = (now + ttl_s, token)
            return True

    def release_probe(self, name: str, token: str) -> None:
        """The probe ended in neither success nor failure: the next caller may probe (a no-op if not ours)."""
        with self._lock:
            if self._probe.get(name, (0.0, ""))[1] == token:
                del self._probe[name]

    def failed(self, name: str, backoff_s: float, at_least_s: float = 0.0) -> float:
        """Open the circuit for the backoff, doubled for each failure in a row (or at least `at_least_s`)."""
        with self._lock:
            self._fails[name] = fails = self._fails.get(name, 0) + 1
            seconds = _open_for(backoff_s, fails, at_least_s)
            self._open[name] = time.monotonic() + seconds
            self._probe.pop(name, None)
            return seconds

    def succeeded(self, name: str, warm_for_s: float) -> None:
        """Close the circuit and mark the endpoint warm."""
        with self._lock:
            for d in (self._fails, self._open, self._probe):
                d.pop(name, None)
            self._warm[name] = time.monotonic() + warm_for_s

    def is_warm(self, name: str) -> bool:
        """Answered within its warm_for_s."""
        with self._lock:
            return self._warm.get(name, 0) > time.monotonic()
