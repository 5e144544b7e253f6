"""Parsing agent transcripts (JSONL) for the log viewer."""

import json

from agentswarm.dashboard.transcript import parse_transcript


def test_entries_keep_kinds_and_sum_tokens():
    text = "\n".join(json.dumps(x) for x in [
        {"t": 1.0, "kind": "user", "content": "do it"},
        {"t": 2.0, "kind": "assistant", "prompt_tokens": 100, "completion_tokens": 7, "tool_calls": []},
        {"t": 3.0, "kind": "tool", "name": "run", "result": "ok"},
        {"t": 4.0, "kind": "llm_call", "prompt_tokens": 5, "completion_tokens": True},
    ]) + "\n{broken\n[1, 2]\n\n"
    out = parse_transcript(text)
    assert [e["kind"] for e in out["entries"]] == ["user", "assistant", "tool", "llm_call", "unparsed", "unparsed"]
    assert out["entries"][4]["text"] == "{broken"
    assert out["tokens"] == {"prompt": 105, "completion": 7}
    assert out["lines"] == 6 and out["truncated"] is False


def test_caps_entries_and_fields():
    long = "x" * 50
    text = "\n".join(json.dumps({"kind": "tool", "result": long}) for _ in range(30))
    out = parse_transcript(text, max_entries=10, field_cap=20)
    assert len(out["entries"]) == 10 and out["lines"] == 30 and out["truncated"] is True
    assert out["entries"][0]["result"].startswith("x" * 20) and "30 more characters" in out["entries"][0]["result"]


def test_truncation_marker_and_empty():
    assert parse_transcript('{"kind": "truncated", "note": "cap"}')["truncated"] is True
    assert parse_transcript("") == {"entries": [], "lines": 0, "truncated": False,
                                    "tokens": {"prompt": 0, "completion": 0}}
