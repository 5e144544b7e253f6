"""Fixtures for the LLM client tests: a raw loopback HTTP server for answers the fake cannot give."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# (request headers, request body) -> (status, response headers, response body)
Responder = Callable[[dict[str, str], dict], tuple[int, dict[str, str], bytes | dict]]


@pytest.fixture
def raw_server() -> Iterator[Callable[[Responder], str]]:
    """Start real HTTP servers that answer with whatever the test's responder returns; yields a starter."""
    servers: list[ThreadingHTTPServer] = []

    def start(responder: Responder) -> str:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                status, headers, payload = responder(dict(self.headers.items()), body)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["requests", "stdlib"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every LLMClient made in the test, whatever its URL, moves its bytes with this transport: the client's
    cases are proven on requests (real endpoints) and on http.client (what loopback URLs get by default)."""
    import agentswarm.llm.client
    from agentswarm.llm import make_transport

    chosen = request.param
    monkeypatch.setattr(agentswarm.llm.client, "make_transport",
                        lambda name, url: make_transport(chosen if name == "auto" else name, url))
    return chosen
