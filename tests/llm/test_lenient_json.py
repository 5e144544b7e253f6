"""Lenient JSON: the repairs it makes, the ones it refuses, and what a cut text gives back."""

from __future__ import annotations

import json

import pytest

from agentswarm.llm.lenient_json import LenientJSONError, loads, repair, scan


@pytest.mark.parametrize(("text", "value", "made"), [
    ('[1, 2, 3,]', [1, 2, 3], ["trailing commas"]),
    ('{"a": [1,], "b": {"c": 2,},}', {"a": [1], "b": {"c": 2}}, ["trailing commas"]),
    ('[1, // one\n 2 /* two */]', [1, 2], ["comments"]),
    ("{'a': 'it\\'s', 'b': \"say \\\"hi\\\"\"}", {"a": "it's", "b": 'say "hi"'}, ["single quotes"]),
    ("{'q': 'a \"quoted\" word'}", {"q": 'a "quoted" word'}, ["single quotes"]),
    ("[True, False, None]", [True, False, None], ["Python literals"]),
    ('["a // not a comment", "b, ]", "True"]', ["a // not a comment", "b, ]", "True"], []),
    ('{"a": "two\nlines"}', {"a": "two\nlines"}, ["line breaks inside strings"]),
])
def test_repairs(text, value, made):
    assert loads(text) == (value, made)


@pytest.mark.parametrize("text", ['[1 2]', '{"a" 1}', "{a: 1}", "[1, 2", '"unterminated', "[" * 5000 + "]" * 5000])
def test_what_is_not_repaired_says_why(text):
    with pytest.raises(LenientJSONError) as info:
        loads(text)
    assert str(info.value)


def test_repair_leaves_valid_json_alone():
    text = json.dumps({"k": ["x, ]", "// y", "'z'", 1.5, None]})
    assert repair(text) == (text, [])


def test_scan_finds_whole_values_in_prose_never_pieces_of_a_broken_one():
    text = 'Sure [the plan] is: [{"a": 1}, {"b": 2},, {"c": 3}] ok {"d": 4}'
    spans = [text[s:e] for s, e in scan(text).spans]
    assert spans == ["[the plan]", '[{"a": 1}, {"b": 2},, {"c": 3}]', '{"d": 4}']


def test_scan_of_a_cut_list_closes_it_after_its_last_complete_object():
    found = scan('Plan:\n[{"a": [1, {"x": 1}]}, {"b": "}, ]"}, {"c": "cut her')
    assert found.cut is not None and found.cut.complete == 2
    assert json.loads(found.cut.salvage) == [{"a": [1, {"x": 1}]}, {"b": "}, ]"}]
    wrapped = scan('{"tasks": [{"a": 1}, {"b')
    assert json.loads(wrapped.cut.salvage) == {"tasks": [{"a": 1}]}
    assert scan('[{"a": 1').cut.salvage is None
    assert scan("see {this and that").cut is None  # a bracket in prose is no cut JSON
