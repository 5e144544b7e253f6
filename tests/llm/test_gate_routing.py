"""The orchestrator's gate routes sandbox calls over the endpoints: overflow, failover, keys, models, records."""

from __future__ import annotations

import http.client
import json
import socket
import threading

from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.llm.endpoints import Endpoint
from agentswarm.llm.router import Router
from agentswarm.llm.routing_state import RedisRoutingState
from agentswarm.work.model_gate import LLMGate


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def _chat(gate: LLMGate, token: str | None = None) -> tuple[int, dict]:
    conn = _UnixConnection(gate.socket_path)
    body = json.dumps({"model": "whatever-the-sandbox-says", "messages": [{"role": "user", "content": "hi"}]})
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Authorization": f"Bearer {token or gate.token}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, data


def test_the_gate_overflows_fails_over_and_records_each_endpoint(redis_client, monkeypatch, closed_port):
    monkeypatch.setenv("ONE_KEY", "sk-one-0123456789")
    monkeypatch.setenv("TWO_KEY", "sk-two-9876543210")
    with FakeLLMServer(lambda body: "one", latency_s=0.5) as one, FakeLLMServer(lambda body: "two") as two:
        endpoints = [Endpoint("dead", f"http://127.0.0.1:{closed_port}", key_env="ONE_KEY", model="m-dead"),
                     Endpoint("one", one.url, key_env="ONE_KEY", model="m-one", max_concurrency=1),
                     Endpoint("two", two.url, key_env="TWO_KEY", model="m-two")]
        router = Router(endpoints, RedisRoutingState(redis_client))
        with LLMGate(None, None, router=router) as gate:
            results: list[tuple[int, dict]] = []
            threads = [threading.Thread(target=lambda: results.append(_chat(gate))) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert _chat(gate, "not-the-token")[0] == 401
            calls = list(gate.calls)
    assert [r[0] for r in results] == [200, 200, 200]
    failed = [c for c in calls if not c.ok]
    calls = [c for c in calls if c.ok]
    # Each recorded, then moved on (up to all three, when they took "dead" before the first failure opened it).
    assert 1 <= len(failed) <= 3 and all(c.endpoint == "dead" and "failed over" in c.error for c in failed)
    assert sorted(c.endpoint for c in calls) == ["one", "two", "two"]  # one slot on "one", the rest overflowed
    assert all(c.started_at > 0 and c.prompt_tokens > 0 for c in calls)
    assert {c.model for c in calls} == {"m-one", "m-two"}
    assert [r["model"] for r in one.requests] == ["m-one"] and {r["model"] for r in two.requests} == {"m-two"}
    assert {h["Authorization"] for h in one.request_headers} == {"Bearer sk-one-0123456789"}
    assert {h["Authorization"] for h in two.request_headers} == {"Bearer sk-two-9876543210"}
    assert router.state_of("dead")["circuit"] == "open"  # the refused connection opened its circuit
    assert all(s["in_use"] == 0 for s in router.snapshot())  # every lease came back
