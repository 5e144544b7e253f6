"""A hostile sandbox against the model gate: only chat completions and the model list pass, each capped,
counted and scrubbed.

The sandbox holds only the gate's token; the gate holds the real key. Each test plays what a
prompt-injected agent did to the old gate (issue 26, hole 4): other paths and dot segments forwarded
with the key, unbounded max_tokens, no budget or rate, an upstream error echoing the key back.
The upstream here is a tiny real HTTP server that records every request and echoes what it was sent.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentswarm.llm.endpoints import Endpoint
from agentswarm.llm.router import Router
from agentswarm.llm.routing_state import RedisRoutingState
from agentswarm.work.model_gate import LLMGate
from agentswarm.work.model_gate_limits import GateLimits

KEY = "sk-real-upstream-key-0123456789abcdef"


class _Upstream(BaseHTTPRequestHandler):
    """Answers chat and models like a model server; any other path echoes the Authorization header."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null") if length else None
        auth = self.headers.get("Authorization") or ""
        self.seen.append({"method": method, "path": self.path, "auth": auth, "body": body})
        if method == "GET" and self.path == "/v1/models":
            self._answer(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})
        elif method == "POST" and self.path == "/v1/chat/completions":
            said = body["messages"][-1]["content"]
            if said == "echo":  # a careless proxy: the credentials back, plain, base64'd and in a header
                b64 = base64.b64encode(auth.encode()).decode()
                self._answer(401, {"error": {"message": f"invalid credentials: got {auth!r} ({b64})"}},
                             {"X-Debug-Auth": auth})
                return
            if body.get("stream"):  # the key inside a streamed answer, sent a few bytes at a time
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                chunk = {"choices": [{"delta": {"content": f"streamed {auth} " * 3}, "finish_reason": "stop"}]}
                raw = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
                for i in range(0, len(raw), 7):
                    self.wfile.write(raw[i:i + 7])
                    self.wfile.flush()
                return
            content = f"your key is {auth}" if said == "leak" else "ok"
            self._answer(200, {"id": "c", "object": "chat.completion", "model": "m", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
        else:
            self._answer(200, {"path": self.path, "auth": auth})

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


@pytest.fixture
def upstream():
    seen: list[dict[str, Any]] = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("U", (_Upstream,), {"seen": seen}))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send(gate: LLMGate, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
    conn = _Unix(gate.socket_path)
    raw = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=raw, headers={"Authorization": f"Bearer {gate.token}",
                                                  "Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


def _chat(gate: LLMGate, content: str = "hi", **extra: Any) -> tuple[int, dict[str, str], bytes]:
    return _send(gate, "POST", "/v1/chat/completions", {"model": "x", "messages": [
        {"role": "user", "content": content}], **extra})


def test_only_chat_and_models_pass_and_dot_segments_never_reach_the_upstream(upstream):
    url, seen = upstream
    hostile = [("POST", "/v1/embeddings"), ("POST", "/v1/responses"), ("GET", "/v1/../../x"),
               ("POST", "/v1/chat/completions/../../embeddings"), ("GET", "/v1/%2e%2e/%2e%2e/admin"),
               ("GET", "/v1/%252e%252e/admin"), ("POST", "//v1//files"), ("GET", "/v1/chat/completions"),
               ("POST", "/v1/models"), ("DELETE", "/v1/models"), ("PUT", "/v1/chat/completions"),
               ("GET", "/v1/models%00/../../x"), ("GET", "/../../etc/passwd")]
    with LLMGate(url, KEY) as gate:
        for method, path in hostile:
            status, _, raw = _send(gate, method, path, {"input": "x"} if method != "GET" else None)
            assert status in (403, 404, 405), (method, path, status, raw)
            error = json.loads(raw)["error"]
            assert "agentswarm gate" in error["message"] and KEY not in raw.decode(), (method, path)
        assert seen == []  # nothing of that reached the upstream, with or without the key
        assert gate.calls == []
        # The two allowed ones pass, normalised: a query string and a doubled slash go no further than the gate.
        assert _send(gate, "GET", "/v1/models?x=../../y")[0] == 200
        assert _send(gate, "POST", "//v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})[0] == 200
        calls = list(gate.calls)
    assert [(s["method"], s["path"]) for s in seen] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
    assert len(calls) == 2  # the model list is recorded too: every forwarded call is counted


def test_max_tokens_is_capped_and_set_when_missing(upstream):
    url, seen = upstream
    with LLMGate(url, KEY, limits=GateLimits(max_tokens_per_call=512)) as gate:
        assert _chat(gate, max_tokens=10**9)[0] == 200
        assert _chat(gate)[0] == 200
        assert _chat(gate, max_completion_tokens=10**9, max_tokens=100)[0] == 200
        assert _chat(gate, n=50)[0] == 200
    bodies = [s["body"] for s in seen]
    assert [b["max_tokens"] for b in bodies] == [512, 512, 100, 512]
    assert bodies[2]["max_completion_tokens"] == 512
    assert bodies[3]["n"] == 1  # n answers would multiply the completion tokens past the cap


def test_every_forwarded_call_is_recorded_failed_ones_too(upstream, closed_port):
    url, seen = upstream
    with LLMGate(url, KEY) as gate:
        assert _chat(gate)[0] == 200
        assert _chat(gate, "echo")[0] == 401
        assert _send(gate, "GET", "/v1/models")[0] == 200
        calls = list(gate.calls)
    assert len(calls) == len(seen) == 3
    assert [c.ok for c in calls] == [True, False, True]
    assert calls[0].prompt_tokens == 10 and calls[0].completion_tokens == 5
    assert KEY not in (calls[1].error or "") and "401" in (calls[1].error or "")
    with LLMGate(f"http://127.0.0.1:{closed_port}", KEY, max_retries=1) as gate:
        assert _chat(gate)[0] == 502
        assert [c.ok for c in gate.calls] == [False, False]  # each attempt, the retry too


def test_a_sandbox_is_stopped_at_its_budget_of_calls_tokens_and_dollars(upstream, redis_client):
    url, seen = upstream
    with LLMGate(url, KEY, limits=GateLimits(max_calls=3)) as gate:
        assert [_chat(gate)[0] for _ in range(3)] == [200, 200, 200]
        status, _, raw = _chat(gate)
        assert status == 402 and "budget" in json.loads(raw)["error"]["message"]
        assert _send(gate, "GET", "/v1/models")[0] == 402  # the model list is a call like any other
        assert len(gate.calls) == 3
    assert len(seen) == 3
    with LLMGate(url, KEY, limits=GateLimits(max_tokens=20)) as gate:  # 15 tokens a call
        assert [_chat(gate)[0] for _ in range(3)] == [200, 200, 402]
    # Dollars at the endpoint's prices: 10 prompt tokens at $0.1 each is $1 a call.
    router = Router([Endpoint("priced", url, model="m", price_in_per_mtok=100_000.0)], RedisRoutingState(redis_client))
    with LLMGate(None, None, router=router, limits=GateLimits(max_cost_usd=2.5)) as gate:
        assert [_chat(gate)[0] for _ in range(4)] == [200, 200, 200, 402]
        assert gate.spent().cost_usd == pytest.approx(3.0)
    assert len(seen) == 3 + 2 + 3


def test_a_sandbox_is_rate_limited(upstream):
    url, seen = upstream
    with LLMGate(url, KEY, limits=GateLimits(calls_per_minute=2)) as gate:
        assert [_chat(gate)[0] for _ in range(2)] == [200, 200]
        status, headers, raw = _chat(gate)
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert "rate" in json.loads(raw)["error"]["message"]
    assert len(seen) == 2


def test_an_upstream_error_echoing_the_key_reaches_the_agent_without_it(upstream):
    url, seen = upstream
    b64 = base64.b64encode(f"Bearer {KEY}".encode()).decode()
    with LLMGate(url, KEY) as gate:
        status, headers, raw = _chat(gate, "echo")
        leak_status, _, leak = _chat(gate, "leak")
        stream_status, _, streamed = _chat(gate, "leak", stream=True)
        calls = list(gate.calls)
    assert seen[0]["auth"] == f"Bearer {KEY}"  # the upstream did get the key, and echoed it
    text = raw.decode() + json.dumps(headers) + leak.decode() + streamed.decode()
    assert status == 401 and leak_status == 200 and stream_status == 200
    assert streamed.decode().count("streamed Bearer ***") == 3 and streamed.endswith(b"data: [DONE]\n\n")
    assert [c.ok for c in calls] == [False, True, True] and KEY not in json.dumps([c.error for c in calls])
    assert KEY not in text and KEY[8:24] not in text and b64[12:40] not in text
    assert "invalid credentials" in raw.decode()  # the error itself still reaches the agent
