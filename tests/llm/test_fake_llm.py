"""FakeLLMServer itself: scripts, faults, bookkeeping, bad input, and the command-line entry."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from agentswarm.demo import FakeLLMServer, Fault
from agentswarm.llm import LLMClient, LLMHTTPError, Usage
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("transport")  # every case over requests and http.client

HELLO = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parents[2]


def test_a_dry_script_answers_500_with_a_clear_message():
    with FakeLLMServer(["only one"]) as srv:
        c = LLMClient(srv.url, max_retries=0)
        assert c.chat(HELLO).content == "only one"
        with pytest.raises(LLMHTTPError) as info:
            c.chat(HELLO)
    assert info.value.status == 500
    assert "script exhausted: 1 replies were scripted and request #2 has none left" in info.value.body_excerpt


def test_a_malformed_script_item_is_reported_not_swallowed():
    with FakeLLMServer([{"content": "x", "tool_call": []}, 42]) as srv:
        c = LLMClient(srv.url, max_retries=0)
        with pytest.raises(LLMHTTPError, match=r"unknown key\(s\) tool_call"):
            c.chat(HELLO)
        with pytest.raises(LLMHTTPError, match="must be a str, a dict or a Fault, got int"):
            c.chat(HELLO)


def test_a_callable_script_sees_each_request_and_a_crash_becomes_a_500():
    def script(body: dict):
        if body["messages"][-1]["content"] == "boom":
            raise KeyError("nope")
        return f"echo: {body['messages'][-1]['content']}"

    with FakeLLMServer(script) as srv:
        c = LLMClient(srv.url, max_retries=0)
        assert c.chat(HELLO).content == "echo: hi"
        with pytest.raises(LLMHTTPError, match="fake LLM reply failed: KeyError"):
            c.chat([{"role": "user", "content": "boom"}])


def test_faults_as_script_items_and_as_a_callable():
    with FakeLLMServer([Fault.server_error(503), "after"]) as srv:
        assert LLMClient(srv.url, backoff_base_s=0.01).chat(HELLO).content == "after"
        assert len(srv.requests) == 2
    calls = []

    def faults(body: dict):
        calls.append(body)
        return Fault.server_error(500) if len(calls) == 1 else None

    with FakeLLMServer(["ok"], faults=faults) as srv:
        assert LLMClient(srv.url, backoff_base_s=0.01).chat(HELLO).content == "ok"
    assert len(calls) == 2


def test_usage_total_counts_only_successful_replies():
    script = [{"content": "a", "usage": {"prompt_tokens": 10, "completion_tokens": 4}}, Fault.server_error(500),
              {"content": "b", "usage": {"prompt_tokens": 20, "completion_tokens": 6}}]
    with FakeLLMServer(script) as srv:
        c = LLMClient(srv.url, max_retries=0)
        c.chat(HELLO)
        with pytest.raises(LLMHTTPError):
            c.chat(HELLO)
        c.chat(HELLO, stream=True)
        # The server adds a streamed reply's usage after its last byte went out: the client may be done first.
        wait_for(lambda: srv.usage_total == Usage(30, 10), timeout=10, every=0.02)


def test_concurrent_requests_are_all_recorded_and_answered_once_each():
    n = 16
    with FakeLLMServer([f"reply {i}" for i in range(n)], latency_s=0.05) as srv:
        c = LLMClient(srv.url, max_retries=0)
        answers: list[str] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            content = c.chat([{"role": "user", "content": f"q{i}"}]).content
            with lock:
                answers.append(content)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        assert sorted(answers) == sorted(f"reply {i}" for i in range(n))
        assert sorted(b["messages"][0]["content"] for b in srv.requests) == sorted(f"q{i}" for i in range(n))
    assert elapsed < n * 0.05  # served in parallel, not one after another


def test_bad_requests_get_a_400():
    with FakeLLMServer(["x"]) as srv:
        r = requests.post(srv.url + "/v1/chat/completions", data=b"{nope", timeout=5)
        assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
        r = requests.post(srv.url + "/v1/chat/completions", json={"messages": []}, timeout=5)
        assert r.status_code == 400 and "non-empty 'messages'" in r.json()["error"]["message"]
        assert requests.get(srv.url + "/v2/nothing", timeout=5).status_code == 404
        assert srv.requests == []


def test_constructor_refuses_bad_arguments():
    with pytest.raises(TypeError, match="script must be a list or a callable"):
        FakeLLMServer("hello")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency_s"):
        FakeLLMServer([], latency_s=-1)
    with pytest.raises(ValueError, match="status must be 4xx or 5xx"):
        Fault.server_error(200)
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")


def test_stop_releases_the_port_and_wakes_a_hanging_request():
    srv = FakeLLMServer(["x"], faults=[Fault.hang(30)]).start()
    port = srv.port
    errors: list[Exception] = []

    def call() -> None:
        try:
            LLMClient(srv.url, timeout_s=10, max_retries=0).chat(HELLO)
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.1)
    started = time.monotonic()
    srv.stop()
    t.join(5)
    assert time.monotonic() - started < 2
    assert len(errors) == 1  # the hanging request was dropped, not answered
    with FakeLLMServer(["again"], port=port) as again:
        assert LLMClient(again.url).chat(HELLO).content == "again"


def test_command_line_entry_serves_the_simulator(closed_port):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentswarm.demo.fake_llm", "--port", str(closed_port), "--latency", "0.01"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    try:
        url = f"http://127.0.0.1:{closed_port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                models = LLMClient(url, max_retries=0, timeout_s=1).models()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert models == ["fake-glm"]
        reply = LLMClient(url).chat([{"role": "system", "content": "You are helpful."}, *HELLO])
        assert "does not start with an AgentSwarm role line" in reply.content
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert "listening on" in out
    assert "RuntimeWarning" not in err
