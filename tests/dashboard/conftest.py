"""Fixtures: a real dashboard server on a free port over the test database (reached through 127.0.0.1)."""

from __future__ import annotations

import threading

import pytest
import requests

from agentswarm.config import load_settings
from agentswarm.dashboard import make_server
from agentswarm.dashboard.app import HOSTS_ENV, TOKEN_ENV
from agentswarm.db.session import session_scope
from tests.dashboard.sample import fill

SECRET_KEY = "sk-dashboard-test-secret-4242"


class Client:
    """HTTP calls against one running dashboard."""

    def __init__(self, base: str, server) -> None:
        self.base = base
        self.server = server

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.base + path, timeout=10, **kw)

    def post(self, path: str, body=None, **kw) -> requests.Response:
        return requests.post(self.base + path, json=body if body is not None else {}, timeout=10, **kw)


@pytest.fixture(autouse=True)
def _no_dashboard_env(monkeypatch):
    """Tests set the token and the allowed hosts themselves."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(HOSTS_ENV, raising=False)


@pytest.fixture
def start_dashboard(db, redis_client):
    """Factory: start a dashboard server (port 0) bound to `bind`, in a thread; all are shut down at the end."""
    servers = []

    def start(bind: str = "127.0.0.1", read_timeout: float | None = None, **overrides) -> Client:
        settings = load_settings(**{"database_url": db, "llm_api_key": SECRET_KEY, **overrides})
        timeout = {} if read_timeout is None else {"read_timeout": read_timeout}
        server = make_server(bind, 0, settings, **timeout)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return Client(f"http://127.0.0.1:{server.server_address[1]}", server)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dash(start_dashboard) -> Client:
    """A dashboard over empty tables."""
    return start_dashboard()


@pytest.fixture
def sample(db):
    """The sample run's id, its rows committed."""
    with session_scope(db) as session:
        return fill(session).id
