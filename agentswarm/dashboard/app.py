"""What every request handler shares: the settings, who may read and steer, and a Redis client for queue depths.

The rules, in every binding mode:

* Host: a request must be addressed to a loopback name (127.0.0.0/8, `localhost`, `[::1]`) with the
  server's port or none; when bound off loopback, also to a name listed in AGENTSWARM_DASHBOARD_HOSTS
  (`name` takes the server's port or none, `name:port` exactly that port). Anything else is 403, so a
  page that rebinds its own DNS name to this machine reads nothing.
* Reads: open on a loopback bind; off loopback they need the token (Authorization: Bearer ...).
* Steering: same-origin JSON POSTs; the token when one is set, else only on a loopback bind.
* Off loopback without AGENTSWARM_DASHBOARD_TOKEN the server does not start (`check_bind`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

import redis

from agentswarm.config import Settings, split_host
from agentswarm.errors import ConfigError

log = logging.getLogger("agentswarm.dashboard")
TOKEN_ENV = "AGENTSWARM_DASHBOARD_TOKEN"
HOSTS_ENV = "AGENTSWARM_DASHBOARD_HOSTS"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_from_file(path: Path) -> str:
    """The token kept in `path`; a new random one is written there (mode 0600) when the file does not exist.

    For a dashboard that must listen off loopback with nothing configured (docker compose's demo swarm): the
    person reads the token from the file, the server never prints it.
    """
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


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

    def has_token(self, authorization: str | None) -> bool:
        """The request carries the configured token as a bearer token (never true without a token set)."""
        if not self.token:
            return False
        sent = (authorization or "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(sent.encode(), self.token.encode())

    def may_steer(self, authorization: str | None) -> bool:
        """With a token set, the request must carry it as a bearer token; without one, only on loopback."""
        if self.token:
            return self.has_token(authorization)
        return self.loopback

    def may_read(self, authorization: str | None) -> bool:
        """On a loopback bind anyone who reached the port may read; elsewhere only with the token."""
        return self.loopback or self.has_token(authorization)

    def host_allowed(self, host_header: str | None, port: int) -> bool:
        """The Host header names this server: a loopback name, or (off loopback) one of the listed names."""
        try:
            name, sent_port = split_host(host_header or "")
        except ValueError:
            return False
        if is_loopback(name) and sent_port in (None, port):
            return True
        if self.loopback:
            return False
        for entry in self.settings.dashboard_hosts:
            allowed, allowed_port = split_host(entry)
            if name == allowed and sent_port in ((None, port) if allowed_port is None else (allowed_port,)):
                return True
        return False

    def check_bind(self) -> None:
        """Refuse to serve off loopback without a token: every request there needs one (ConfigError, one line)."""
        if not self.loopback and not self.token:
            raise ConfigError(f"{TOKEN_ENV} is not set: the dashboard will not listen on {self.host}, off loopback "
                              "every request needs that token (set it, or bind 127.0.0.1)")

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
