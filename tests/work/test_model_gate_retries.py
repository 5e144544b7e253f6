"""The model gate retries a cut, unparsable or empty 200 like a 5xx, and records each such attempt as failed.

Issue 27 item 3 (the gate's side): a truncated answer used to reach the agent (failing its attempt)
and be recorded ok=true with estimated usage.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.faults import Fault
from agentswarm.llm.endpoints import Endpoint
from agentswarm.llm.router import Router
from agentswarm.llm.routing_state import RedisRoutingState
from agentswarm.work.model_gate import LLMGate


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def _chat(gate: LLMGate, **extra: Any) -> tuple[int, bytes]:
    conn = _Unix(gate.socket_path)
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], **extra}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {gate.token}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


@pytest.fixture
def empty_then_good():
    """200 with no body, then 200 with `{}`, then a proper answer."""
    answers = [b"", b"{}"]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            raw = answers.pop(0) if answers else json.dumps({"choices": [{"message": {"role": "assistant",
                    "content": "fine"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 3,
                    "completion_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_cut_or_unparsable_200_is_retried_and_recorded_failed():
    with FakeLLMServer(["ok"], faults=[Fault.truncated(), Fault.malformed_json()]) as fake, \
            LLMGate(fake.url, "sk-fake-key-0123456789", retry_pause_s=0.05) as gate:
        status, raw = _chat(gate)
        calls = list(gate.calls)
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == "ok"
    assert [c.ok for c in calls] == [False, False, True]
    assert all("not JSON" in (c.error or "") and "retried" in (c.error or "") for c in calls[:2])
    assert calls[0].prompt_tokens == calls[0].completion_tokens == 0 and not calls[0].usage_estimated
    assert calls[2].prompt_tokens > 0


def test_an_empty_200_is_retried(empty_then_good):
    with LLMGate(empty_then_good, None, retry_pause_s=0.05) as gate:
        status, raw = _chat(gate)
        calls = list(gate.calls)
    assert status == 200 and "fine" in raw.decode()
    assert [c.ok for c in calls] == [False, False, True]
    assert "empty body" in (calls[0].error or "") and "no choices" in (calls[1].error or "")
    assert (calls[2].prompt_tokens, calls[2].completion_tokens) == (3, 2)


def test_retries_are_bounded_and_every_attempt_is_recorded():
    with FakeLLMServer(faults=lambda body: Fault.truncated()) as fake, \
            LLMGate(fake.url, None, max_retries=2, retry_pause_s=0.05) as gate:
        status, raw = _chat(gate)
        calls = list(gate.calls)
    assert status == 502 and "no usable answer in 3 attempts" in json.loads(raw)["error"]["message"]
    assert len(fake.requests) == 3 and [c.ok for c in calls] == [False, False, False]


def test_a_cut_answer_fails_over_to_the_next_endpoint(redis_client):
    with FakeLLMServer(faults=lambda body: Fault.truncated()) as bad, FakeLLMServer(["from two"]) as good:
        router = Router([Endpoint("one", bad.url, model="m-one"), Endpoint("two", good.url, model="m-two")],
                        RedisRoutingState(redis_client))
        with LLMGate(None, None, router=router) as gate:
            status, raw = _chat(gate)
            calls = list(gate.calls)
        assert status == 200 and "from two" in raw.decode()
        assert [(c.endpoint, c.ok) for c in calls] == [("one", False), ("two", True)]
        assert "failed over" in (calls[0].error or "")
        assert router.state_of("one")["circuit"] == "open"  # the cut answer counts against its endpoint
        assert all(s["in_use"] == 0 for s in router.snapshot())


def test_a_stream_cut_after_it_began_is_recorded_failed():
    with FakeLLMServer(["never seen"], faults=[Fault.truncated()]) as fake, LLMGate(fake.url, None) as gate:
        status, raw = _chat(gate, stream=True)
        calls = list(gate.calls)
    assert status == 200 and b"[DONE]" not in raw  # handed over as it came: the client retries it
    assert len(calls) == 1 and calls[0].ok is False and "broke off" in (calls[0].error or "")
