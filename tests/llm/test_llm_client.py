"""LLMClient over real HTTP against FakeLLMServer (and a raw loopback server for odd answers)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

import agentswarm.llm.client
from agentswarm.demo import FakeLLMServer, Fault
from agentswarm.llm import (
    ChatReply,
    LLMClient,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMProtocolError,
    LLMTimeout,
    ToolCall,
    Usage,
    estimate_cost_usd,
    normalize_base_url,
    parse_retry_after,
)
from agentswarm.llm import make_transport as ORIGINAL_MAKE_TRANSPORT  # before any fixture patches it
from agentswarm.llm.client import sse_lines

pytestmark = pytest.mark.usefixtures("transport")  # every case over requests and http.client

KEY = "sk-test-9f8e7d6c5b4a-secret"
HELLO = [{"role": "user", "content": "hello there"}]


def client(server: FakeLLMServer, **kw) -> LLMClient:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return LLMClient(server.url, kw.pop("api_key", None), "fake-glm", **kw)


def test_plain_reply_has_content_usage_and_latency():
    with FakeLLMServer(["The answer is 42."], latency_s=0.05) as srv:
        reply = client(srv).chat(HELLO, max_tokens=100, temperature=0.2)
    assert reply.content == "The answer is 42."
    assert reply.tool_calls == [] and reply.reasoning is None
    assert reply.finish_reason == "stop"
    assert reply.model == "fake-glm"
    assert reply.usage == Usage(prompt_tokens=3, completion_tokens=5)  # ceil(11/4), ceil(17/4)
    assert reply.latency_s >= 0.05
    body = srv.requests[0]
    assert body["messages"] == HELLO and body["max_tokens"] == 100 and body["temperature"] == 0.2
    assert "stream" not in body and "tools" not in body
    assert srv.usage_total == reply.usage


def test_tool_calls_are_parsed_and_round_trip_into_history():
    script = [{"content": None, "tool_calls": [
        {"name": "write_file", "arguments": {"path": "src/a.ts", "content": "export {};"}},
        {"name": "run", "arguments": '{"command": "git status --short"}'},
    ]}]
    tools = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}]
    with FakeLLMServer(script) as srv:
        reply = client(srv).chat(HELLO, tools=tools, tool_choice="auto")
    assert srv.requests[0]["tools"] == tools and srv.requests[0]["tool_choice"] == "auto"
    assert [c.name for c in reply.tool_calls] == ["write_file", "run"]
    assert reply.tool_calls[0].parsed_arguments() == {"path": "src/a.ts", "content": "export {};"}
    assert reply.tool_calls[1].arguments == '{"command": "git status --short"}'
    assert reply.finish_reason == "tool_calls"
    msg = reply.assistant_message()
    assert msg["role"] == "assistant" and msg["content"] is None
    assert msg["tool_calls"][0] == {"id": reply.tool_calls[0].id, "type": "function", "function": {
        "name": "write_file", "arguments": reply.tool_calls[0].arguments}}


def test_parsed_arguments_rejects_bad_json_and_non_objects():
    with pytest.raises(ValueError, match=r"tool call 'edit_file': arguments are not valid JSON"):
        ToolCall("c1", "edit_file", '{"path": "a.ts", "old": ').parsed_arguments()
    with pytest.raises(ValueError, match="must be a JSON object, got list"):
        ToolCall("c2", "run", '["ls"]').parsed_arguments()
    assert ToolCall("c3", "list_files", "").parsed_arguments() == {}


def test_reasoning_is_kept_apart_from_the_answer():
    script = [{"content": "Final answer.", "reasoning": "Let me think about chunk sizes first."}]
    with FakeLLMServer(script) as srv:
        reply = client(srv).chat(HELLO)
    assert reply.content == "Final answer."
    assert reply.reasoning == "Let me think about chunk sizes first."
    assert "think" not in json.dumps(reply.assistant_message())


def test_reasoning_field_think_block_and_unknown_fields_go_to_extras(raw_server):
    def respond(headers, body):
        return 200, {}, {
            "id": "x", "object": "chat.completion", "model": "glm-5", "system_fingerprint": "fp1",
            "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": 151336,
                         "message": {"role": "assistant", "content": "<think>hmm, tiles</think>\nUse 16.",
                                     "refusal": None, "annotations": ["a"]}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3},
        }

    reply = LLMClient(raw_server(respond)).chat(HELLO)
    assert reply.content == "Use 16." and reply.reasoning == "hmm, tiles"
    assert reply.extras == {"system_fingerprint": "fp1", "stop_reason": 151336, "annotations": ["a"]}
    assert reply.model == "glm-5" and reply.usage == Usage(7, 3)

    def respond2(headers, body):
        return 200, {}, {"choices": [{"message": {"role": "assistant", "content": "ok", "reasoning": "why"}}]}

    reply = LLMClient(raw_server(respond2), model="m").chat(HELLO)
    # No usage in the answer: estimated from characters (11 of prompt, 2 + 3 written, 3 a token) and marked so.
    assert (reply.content, reply.reasoning, reply.usage, reply.model) == ("ok", "why", Usage(4, 2, True), "m")


def test_streaming_assembles_the_same_reply_with_tool_call_deltas():
    item = {"content": "Writing the chunk module now.", "reasoning": "Scope has one file.",
            "tool_calls": [{"name": "write_file", "arguments": {"path": "src/world/chunk.ts", "content": "x" * 40}},
                           {"name": "finish", "arguments": {"status": "complete", "summary": "done"}}]}
    with FakeLLMServer([item, item]) as srv:
        c = client(srv)
        plain = c.chat(HELLO)
        streamed = c.chat(HELLO, stream=True)
    assert srv.requests[1]["stream"] is True
    assert srv.requests[1]["stream_options"] == {"include_usage": True}
    assert streamed.content == plain.content == item["content"]
    assert streamed.reasoning == plain.reasoning == item["reasoning"]
    assert [(t.name, t.parsed_arguments()) for t in streamed.tool_calls] == [
        (t.name, t.parsed_arguments()) for t in plain.tool_calls]
    assert streamed.tool_calls[0].id == "call_2_0"
    assert streamed.finish_reason == "tool_calls"
    assert streamed.usage == plain.usage and streamed.usage.completion_tokens > 0
    assert streamed.latency_s > 0
    assert srv.usage_total == plain.usage + streamed.usage


def test_rate_limit_retry_after_is_waited_out():
    with FakeLLMServer(["finally"], faults=[Fault.rate_limit(retry_after=2)]) as srv:
        started = time.monotonic()
        reply = client(srv).chat(HELLO)
        elapsed = time.monotonic() - started
    assert reply.content == "finally"
    assert elapsed >= 2.0
    assert len(srv.requests) == 2


def test_retry_after_is_capped_by_max_backoff():
    with FakeLLMServer(["ok"], faults=[Fault.rate_limit(retry_after=120)]) as srv:
        started = time.monotonic()
        assert client(srv, max_backoff_s=0.2).chat(HELLO).content == "ok"
    assert time.monotonic() - started < 2


def test_parse_retry_after_accepts_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == pytest.approx(10.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_server_error_is_retried_then_succeeds():
    with FakeLLMServer(["recovered"], faults=[Fault.server_error(500), Fault.server_error(503)]) as srv:
        assert client(srv).chat(HELLO).content == "recovered"
    assert len(srv.requests) == 3


def test_retries_are_bounded_and_the_error_carries_status_and_body():
    with FakeLLMServer(["never"], faults=[Fault.server_error(502, "upstream worker died")] * 10) as srv:
        with pytest.raises(LLMHTTPError) as info:
            client(srv, max_retries=2).chat(HELLO)
    assert len(srv.requests) == 3
    assert info.value.status == 502
    assert "upstream worker died" in info.value.body_excerpt
    assert "gave up after 3 attempts" in str(info.value)


def test_client_errors_are_not_retried():
    with FakeLLMServer(["never"], faults=[Fault.server_error(400, "bad tool schema")]) as srv:
        with pytest.raises(LLMHTTPError) as info:
            client(srv).chat(HELLO)
    assert info.value.status == 400 and "bad tool schema" in str(info.value)
    assert len(srv.requests) == 1


def test_long_error_bodies_are_cut_to_an_excerpt(raw_server):
    url = raw_server(lambda h, b: (422, {}, b"E" * 5000))
    with pytest.raises(LLMHTTPError) as info:
        LLMClient(url).chat(HELLO)
    assert 500 <= len(info.value.body_excerpt) < 600 and len(str(info.value)) < 800


def test_hang_times_out_within_about_the_timeout():
    with FakeLLMServer(["late"], faults=[Fault.hang(5)]) as srv:
        started = time.monotonic()
        with pytest.raises(LLMTimeout):
            client(srv, timeout_s=0.5, max_retries=0).chat(HELLO)
        assert time.monotonic() - started < 2.0


def test_a_stream_that_stalls_half_way_times_out():
    with FakeLLMServer(["unused"], faults=[Fault.stall(5)]) as srv:
        started = time.monotonic()
        with pytest.raises(LLMTimeout, match="stream stalled"):
            client(srv, timeout_s=0.5, max_retries=0).chat(HELLO, stream=True)
        assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("stream", [False, True])
def test_timeouts_are_retried_like_a_5xx(stream):
    fault = Fault.stall(5) if stream else Fault.hang(5)
    with FakeLLMServer(["on time"], faults=[fault]) as srv:
        started = time.monotonic()
        reply = client(srv, timeout_s=0.5, max_retries=2).chat(HELLO, stream=stream)
        assert reply.content == "on time" and len(srv.requests) == 2
        assert time.monotonic() - started < 3.0


def test_timeouts_give_up_after_the_retries():
    with FakeLLMServer(["never"], faults=[Fault.hang(5)] * 3) as srv:
        with pytest.raises(LLMTimeout, match="gave up after 3 attempts"):
            client(srv, timeout_s=0.3, max_retries=2).chat(HELLO)
        assert len(srv.requests) == 3


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", [Fault.malformed_json(), Fault.truncated()], ids=["malformed", "truncated"])
def test_malformed_and_truncated_answers_are_retried_like_a_5xx(fault, stream):
    with FakeLLMServer(["whole this time"], faults=[fault]) as srv:
        reply = client(srv, max_retries=2).chat(HELLO, stream=stream)
    assert reply.content == "whole this time" and len(srv.requests) == 2


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", [Fault.malformed_json(), Fault.truncated()], ids=["malformed", "truncated"])
def test_broken_answers_give_up_after_the_retries_as_protocol_errors(fault, stream):
    with FakeLLMServer(["never"], faults=[fault] * 5) as srv:
        with pytest.raises(LLMProtocolError, match="gave up after 3 attempts") as info:
            client(srv, max_retries=2).chat(HELLO, stream=stream)
    assert info.value.status == 200 and len(srv.requests) == 3


@pytest.mark.parametrize("answer", [{"id": "x", "choices": []}, b"", b"{}"], ids=["no-choices", "empty", "bare"])
def test_an_empty_answer_is_a_protocol_error_and_retried(raw_server, answer):
    asked: list[int] = []

    def respond(h, b):
        asked.append(1)
        return (200, {}, answer) if len(asked) == 1 else (200, {}, {"choices": [{"message": {"content": "ok"}}]})

    url = raw_server(respond)
    assert LLMClient(url, backoff_base_s=0.01).chat(HELLO).content == "ok" and len(asked) == 2
    asked.clear()
    with pytest.raises(LLMProtocolError, match="no choices" if answer else "not valid JSON"):
        LLMClient(raw_server(lambda h, b: (200, {}, answer)), max_retries=0).chat(HELLO)


def test_dead_endpoint_fails_fast_with_a_connection_error(closed_port):
    c = LLMClient(f"http://127.0.0.1:{closed_port}/v1", max_retries=2, backoff_base_s=0.01)
    started = time.monotonic()
    with pytest.raises(LLMConnectionError, match="cannot connect"):
        c.chat(HELLO)
    assert time.monotonic() - started < 2.0


def test_bearer_header_is_sent_only_when_a_key_is_set():
    with FakeLLMServer(["a", "b", "c"]) as srv:
        client(srv, api_key=KEY).chat(HELLO)
        client(srv).chat(HELLO)
        client(srv, api_key="  ").chat(HELLO)
    headers = srv.request_headers
    assert headers[0]["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in headers[1] and "Authorization" not in headers[2]
    assert headers[0]["User-Agent"] == "agentswarm"


def test_the_key_never_leaks_even_when_the_server_echoes_it(caplog, raw_server):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with FakeLLMServer(["x"], faults=[Fault.echo_auth(401)] + [Fault.echo_auth(500)] * 3) as srv:
        c = client(srv, api_key=KEY, max_retries=2)
        for _ in range(2):
            with pytest.raises(LLMHTTPError) as info:
                c.chat(HELLO)
            err = info.value
            assert "Authorization" in err.body_excerpt  # the echo reached us, scrubbed
            seen += [str(err), repr(err), err.body_excerpt, repr(err.args)]
        seen += [repr(c), str(c)]
    echo = raw_server(lambda h, b: (200, {}, {"choices": [{"message": {
        "role": "assistant", "content": f"you sent {h.get('Authorization')}", "debug_key": h.get("Authorization")}}]}))
    reply = LLMClient(echo, KEY).chat(HELLO)
    assert reply.content == "you sent Bearer ***"
    seen += [repr(reply), json.dumps(reply.raw), json.dumps(reply.extras)]
    seen.append(caplog.text)
    assert "retry" in caplog.text  # the retries were logged, so the log check is not vacuous
    for text in seen:
        assert KEY not in text


def test_models_lists_the_served_model():
    with FakeLLMServer(["x"], model="glm-5-fp8") as srv:
        assert LLMClient(srv.url + "/v1/").models() == ["glm-5-fp8"]


@pytest.mark.parametrize(("raw", "expected"), [
    ("http://h:8000", "http://h:8000"),
    (" https://h/openai/v1/ ", "https://h/openai"),
    ("http://h/v1", "http://h"),
    ("http://h/api/", "http://h/api"),
])
def test_normalize_base_url(raw, expected):
    assert normalize_base_url(raw) == expected


@pytest.mark.parametrize("bad", ["", "   ", "h:8000", "ftp://h"])
def test_bad_base_urls_are_refused(bad):
    with pytest.raises(ValueError, match="base URL"):
        LLMClient(bad)


def test_bad_arguments_are_refused_clearly():
    c = LLMClient("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="non-empty list"):
        c.chat([])
    with pytest.raises(ValueError, match=r"messages\[1\] must be a dict with a 'role'"):
        c.chat([{"role": "user", "content": "a"}, {"content": "b"}])
    with pytest.raises(ValueError, match="timeout_s"):
        LLMClient("http://h", timeout_s=0)
    with pytest.raises(ValueError, match="max_retries"):
        LLMClient("http://h", max_retries=-1)


def test_estimate_cost_uses_gpu_time_when_priced_else_tokens():
    usage = Usage(prompt_tokens=2_000_000, completion_tokens=500_000)
    assert estimate_cost_usd(usage, 1.0, price_in_per_mtok=0.5, price_out_per_mtok=2.0) == pytest.approx(2.0)
    assert estimate_cost_usd(usage, 36.0, price_in_per_mtok=0.5, gpu_price_per_hour=50.0) == pytest.approx(0.5)
    assert estimate_cost_usd(usage, 3.0) == 0.0
    with pytest.raises(ValueError, match="latency_s"):
        estimate_cost_usd(usage, -1.0)


def test_reply_types_are_errors_of_one_family():
    assert all(issubclass(e, LLMError) for e in (LLMHTTPError, LLMTimeout, LLMConnectionError, LLMProtocolError))
    assert ChatReply(None, [], None, None, Usage(), 0.0, "m").assistant_message() == {"role": "assistant", "content": None}


def test_the_transport_in_use_is_the_one_the_test_asked_for(transport):
    with FakeLLMServer(["ok"]) as srv:
        c = client(srv)
        assert c.chat(HELLO).content == "ok"
    assert type(c._transport).__name__ == {"requests": "RequestsTransport", "stdlib": "StdlibTransport"}[transport]


def test_loopback_http_gets_the_stdlib_transport_and_the_rest_requests(monkeypatch):
    monkeypatch.setattr(agentswarm.llm.client, "make_transport", ORIGINAL_MAKE_TRANSPORT)  # undo the fixture's choice
    for url in ("http://127.0.0.1:9", "http://localhost:8000/v1", "http://[::1]:8000", "http://127.0.0.2:1"):
        assert type(LLMClient(url)._transport).__name__ == "StdlibTransport", url
    for url in ("https://127.0.0.1:9", "http://10.0.0.5:8000", "https://api.example.com/v1", "http://localhost.x"):
        assert type(LLMClient(url)._transport).__name__ == "RequestsTransport", url
    assert type(LLMClient("http://10.0.0.5", transport="stdlib")._transport).__name__ == "StdlibTransport"
    assert type(LLMClient("http://127.0.0.1:9", transport="requests")._transport).__name__ == "RequestsTransport"
    with pytest.raises(ValueError, match="plain http only"):
        LLMClient("https://api.example.com", transport="stdlib")
    with pytest.raises(ValueError, match="transport must be one of"):
        LLMClient("http://127.0.0.1:9", transport="curl")


def _raw_http(answer: bytes, *, then_wait_s: float = 0.0) -> tuple[str, list[int], threading.Event]:
    """A loopback server that answers every request with `answer` bytes, waits, then drops the connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    served: list[int] = []
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), b"0"))
            while len(rest) < length:
                rest += conn.recv(65536)
            served.append(1)
            conn.sendall(answer)
            stop.wait(then_wait_s)

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}", served, stop


def test_a_body_cut_off_mid_read_is_a_protocol_error_and_retried():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    url, served, stop = _raw_http(head + b'{"choices": [{"message": {"content": "cut')
    try:
        with pytest.raises(LLMProtocolError, match=r"cut off while reading.*gave up after 3 attempts") as info:
            LLMClient(url, max_retries=2, backoff_base_s=0.01, timeout_s=5).chat(HELLO)
    finally:
        stop.set()
    assert info.value.status == 200 and len(served) == 3


def test_a_body_that_stalls_mid_read_times_out_and_is_retried():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    url, served, stop = _raw_http(head + b'{"choices": [', then_wait_s=5)
    try:
        started = time.monotonic()
        with pytest.raises(LLMTimeout, match="gave up after 2 attempts"):
            LLMClient(url, max_retries=1, backoff_base_s=0.01, timeout_s=0.4).chat(HELLO)
        assert time.monotonic() - started < 3.0
    finally:
        stop.set()
    assert len(served) == 2


def test_a_chunked_stream_cut_mid_chunk_is_a_protocol_error():
    line = b'data: {"choices": [{"index": 0, "delta": {"content": "half"}}]}\n\n'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    url, served, stop = _raw_http(head + f"{len(line) + 50:x}\r\n".encode() + line)
    try:
        with pytest.raises(LLMProtocolError):
            LLMClient(url, max_retries=2, backoff_base_s=0.01, timeout_s=5).chat(HELLO, stream=True)
    finally:
        stop.set()
    assert len(served) == 3


def test_a_stream_split_by_bare_carriage_returns_in_odd_chunks_is_read():
    events = [{"choices": [{"index": 0, "delta": {"content": "a\nb"}}]},
              {"choices": [{"index": 0, "delta": {"content": "c"}, "finish_reason": "stop"}]}]
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\r\r" for e in events) + b": keep-alive\rdata: [DONE]\r"
    assert list(sse_lines([body[:7], body[7:8], body[8:90], body[90:]])) == body.splitlines()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    url, _, stop = _raw_http(head + body)
    try:
        reply = LLMClient(url, timeout_s=5).chat(HELLO, stream=True)
    finally:
        stop.set()
    assert reply.content == "a\nbc" and reply.finish_reason == "stop"
