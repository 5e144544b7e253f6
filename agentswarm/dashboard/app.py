"""What every request handler shares: the settings, who may steer, and a Redis client for queue depths."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
from dataclasses import dataclass, field

import redis

from agentswarm.config import Settings

log = logging.getLogger("agentswarm.dashboard")
TOKEN_ENV = "AGENTSWARM_DASHBOARD_TOKEN"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class DashboardApp:
    """The dashboard's state: settings, the bind address, and the steering token (if any)."""

    settings: Settings
    host: str
    token: str = field(default_factory=lambda: os.environ.get(TOKEN_ENV, "").strip())
    _redis: redis.Redis | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def loopback(self) -> bool:
        """The server listens on a loopback address only."""
        return is_loopback(self.host)

    def may_steer(self, authorization: str | None) -> bool:
        """With a token set, the request must carry it as a bearer token; without one, only on loopback."""
        if self.token:
            sent = (authorization or "").removeprefix("Bearer ").strip()
            return hmac.compare_digest(sent.encode(), self.token.encode())
        return self.loopback

    def redis(self) -> redis.Redis:
        """A shared Redis client with short timeouts (the page must not hang on a dead broker)."""
        with self._lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=1.0,
                                                   socket_connect_timeout=1.0)
            return self._redis

    def close(self) -> None:
        """Release the Redis connection pool."""
        if self._redis is not None:
            self._redis.close()
