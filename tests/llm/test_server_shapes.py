"""The client against replies shaped as real servers send them: no usage, tool calls left in the text, bad arguments."""

from __future__ import annotations

import json

import pytest

from agentswarm.demo import FakeLLMServer
from agentswarm.demo.completions import NO_USAGE
from agentswarm.llm import LLMClient, ToolCall, Usage
from agentswarm.llm.replies import ChatReply, history_arguments, usage_of_bodies
from agentswarm.llm.text_calls import calls_in_text

pytestmark = pytest.mark.usefixtures("transport")  # every case over requests and http.client

HELLO = [{"role": "user", "content": "hello there"}]  # 11 characters
TOOLS = [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object", "properties": {
    "path": {"type": "string"}, "content": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object", "properties": {
             "path": {"type": "string"}, "start_line": {"type": "integer"}}}}}]
GLM = ("I will write it.\n<tool_call>write_file\n<arg_key>path</arg_key>\n<arg_value>src/a.ts</arg_value>\n"
       "<arg_key>content</arg_key>\n<arg_value>export const a = 1;\n</arg_value>\n</tool_call>"
       "<tool_call>read_file\n<arg_key>path</arg_key>\n<arg_value>42</arg_value>\n"
       "<arg_key>start_line</arg_key>\n<arg_value>3</arg_value>\n</tool_call>")
HERMES = ('<tool_call>\n{"name": "read_file", "arguments": {"path": "README.md"}}\n</tool_call>\n'
          "<tool_call>\n{'name': 'write_file', 'arguments': {'path': 'b.ts', 'content': 'x',}}\n</tool_call>")


def client(server: FakeLLMServer, **kw) -> LLMClient:
    return LLMClient(server.url, None, "fake-glm", backoff_base_s=0.01, timeout_s=5.0, **kw)


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_without_usage_is_estimated_from_characters_and_marked(stream):
    with FakeLLMServer([{"content": "The answer is 42.", "usage": NO_USAGE}]) as srv:
        reply = client(srv).chat(HELLO, stream=stream)
        assert "usage" not in json.dumps(srv.requests[0]) or stream  # the fake sent none
    assert reply.content == "The answer is 42."
    assert reply.usage == Usage(4, 6, estimated=True)  # ceil(11/3), ceil(17/3)
    assert srv.usage_total == Usage()  # nothing was reported


def test_reported_usage_is_kept_and_an_impossible_zero_is_estimated(raw_server):
    def answer(usage):
        return lambda h, b: (200, {}, {"choices": [{"message": {"content": "abcdef"}, "finish_reason": "stop"}],
                                       "usage": usage})

    assert LLMClient(raw_server(answer({"prompt_tokens": 9, "completion_tokens": 2}))).chat(HELLO).usage == Usage(9, 2)
    zeros = LLMClient(raw_server(answer({"prompt_tokens": 0, "completion_tokens": 0}))).chat(HELLO).usage
    assert zeros == Usage(4, 2, estimated=True)
    half = LLMClient(raw_server(answer({"prompt_tokens": 30}))).chat(HELLO).usage
    assert half == Usage(30, 2, estimated=True)


def test_glm_xml_tool_calls_in_the_text_become_tool_calls():
    with FakeLLMServer([GLM]) as srv:
        reply = client(srv).chat(HELLO, tools=TOOLS)
    assert [(c.name, c.parsed_arguments()) for c in reply.tool_calls] == [
        ("write_file", {"path": "src/a.ts", "content": "export const a = 1;\n"}),  # a string kept exactly
        ("read_file", {"path": "42", "start_line": 3}),  # typed by the schema: "42" stays a string
    ]
    assert reply.content == "I will write it." and reply.extras["tool_calls_from_text"] == 2
    assert len({c.id for c in reply.tool_calls}) == 2


def test_hermes_json_tool_calls_in_the_text_become_tool_calls():
    with FakeLLMServer([HERMES]) as srv:
        reply = client(srv).chat(HELLO, tools=TOOLS, stream=True)
    assert [(c.name, c.parsed_arguments()) for c in reply.tool_calls] == [
        ("read_file", {"path": "README.md"}), ("write_file", {"path": "b.ts", "content": "x"})]
    assert reply.content is None


def test_text_is_left_alone_without_tools_or_when_the_server_parsed_the_calls():
    with FakeLLMServer([GLM, {"content": HERMES, "tool_calls": [{"name": "read_file", "arguments": {"path": "x"}}]}]
                       ) as srv:
        plain = client(srv).chat(HELLO)
        parsed = client(srv).chat(HELLO, tools=TOOLS)
    assert plain.content == GLM and plain.tool_calls == []
    assert parsed.content == HERMES and [c.arguments for c in parsed.tool_calls] == ['{"path": "x"}']


def test_a_tool_call_block_the_text_ends_inside_still_counts():
    calls, rest = calls_in_text("<tool_call>read_file\n<arg_key>path</arg_key>\n<arg_value>a.ts", TOOLS)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("read_file", {"path": "a.ts"})]
    assert rest is None
    calls, _ = calls_in_text('<tool_call>{"name": "read_file", "arguments": {"path": ', TOOLS)
    assert calls[0]["name"] == "read_file" and calls[0]["arguments"].startswith("{")


@pytest.mark.parametrize(("arguments", "sent"), [
    ('{"path": "a.ts", "content": ', {"invalid_arguments": '{"path": "a.ts", "content": '}),
    ("[1, 2]", {"invalid_arguments": "[1, 2]"}),
    ("", {}),
    ('{"path": "a.ts"}', {"path": "a.ts"}),
])
def test_invalid_arguments_go_back_in_the_history_as_a_json_object(arguments, sent):
    reply = ChatReply(None, [ToolCall("c1", "write_file", arguments)], None, "length", Usage(), 0.0, "m")
    message = reply.assistant_message()
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == sent
    assert history_arguments(reply.tool_calls[0]) == message["tool_calls"][0]["function"]["arguments"]


def test_usage_of_proxied_bodies_is_estimated_when_the_reply_has_none():
    request = json.dumps({"messages": HELLO}).encode()
    reported = json.dumps({"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 5,
                                                                                   "completion_tokens": 1}})
    assert usage_of_bodies(request, reported.encode(), "application/json") == Usage(5, 1)
    silent = json.dumps({"choices": [{"message": {"content": "abcdef"}}]}).encode()
    assert usage_of_bodies(request, silent, "application/json") == Usage(4, 2, True)
    sse = (b'data: {"choices": [{"index": 0, "delta": {"content": "abc"}}]}\n\n'
           b'data: {"choices": [{"index": 0, "delta": {"content": "def"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
    assert usage_of_bodies(request, sse, "text/event-stream") == Usage(4, 2, True)
