"""Parsing and validating model replies: every shape a model gets wrong, and no valid task lost."""

from __future__ import annotations

import json

import pytest

from agentswarm.planning.parsing import (
    InvalidTask,
    UnparseableReply,
    check_scope_path,
    extract_items,
    parse_tasks,
    validate_task,
)

KNOWN = {"world-001", "ui-001"}


def good(n: int, **over) -> dict:
    return {"title": f"Task {n}", "description": f"Do thing {n}", "scope": [f"src/t{n}.ts"],
            "acceptance": ["tests pass"], "priority": 3, "feature_ids": ["world-001"], "kind": "feature", **over}


ARRAY = json.dumps([good(1), good(2)])


@pytest.mark.parametrize("text", [
    ARRAY,
    f"```json\n{ARRAY}\n```",
    f"Here is the plan:\n\n```\n{ARRAY}\n```\nLet me know if you need more.",
    f"Sure! Based on [the state] I propose: {ARRAY} -- these are disjoint.",
    f"<think>maybe [1, 2] first</think>{ARRAY}",
    json.dumps({"tasks": [good(1), good(2)]}),
    f"The answer is {json.dumps({'children': [good(1), good(2)]})}.",
])
def test_arrays_are_found_in_fences_prose_and_wrappers(text):
    result = parse_tasks(text, KNOWN, 10)
    assert [t.title for t in result.tasks] == ["Task 1", "Task 2"]
    assert result.rejected == []


def test_a_single_object_is_one_task():
    result = parse_tasks(json.dumps(good(7)), KNOWN, 10)
    assert [t.title for t in result.tasks] == ["Task 7"]


def test_empty_array_means_nothing_to_do():
    assert parse_tasks("[]", KNOWN, 10).tasks == []
    assert parse_tasks("Nothing is ready.\n```json\n[]\n```", KNOWN, 10).tasks == []


@pytest.mark.parametrize("text", ["", "   ", "I cannot plan anything today.", "[{'title': 'python repr'}",
                                  "{" * 100_000, "[" * 100_000, None])
def test_unparseable_replies_raise_one_clear_error(text):
    with pytest.raises(UnparseableReply):
        extract_items(text)


@pytest.mark.parametrize(("path", "fragment"), [
    ("../etc/passwd", "leaves the repository"),
    ("src/../../x.ts", "leaves the repository"),
    ("/etc/passwd", "absolute"),
    ("~/x", "absolute"),
    ("C:/x.ts", "absolute"),
    ("src\\x.ts", "backslashes"),
    (".git/config", ".git"),
    ("./.git/hooks/pre-receive", ".git"),
    ("", "empty"),
    (".", "root"),
    ("src/\x00x", "control"),
    (42, "string"),
    ("a" * 400, "longer"),
])
def test_bad_scope_paths_are_refused(path, fragment):
    with pytest.raises(InvalidTask, match=None) as exc:
        check_scope_path(path)
    assert fragment in str(exc.value)


def test_scope_paths_are_normalised():
    assert check_scope_path("./src//world/chunk.ts") == "src/world/chunk.ts"
    assert check_scope_path("src/world/") == "src/world"
    assert check_scope_path(".github/workflows/ci.yml") == ".github/workflows/ci.yml"


@pytest.mark.parametrize(("raw", "fragment"), [
    ("just a string", "JSON object"),
    ({**good(1), "title": ""}, "title"),
    ({k: v for k, v in good(1).items() if k != "description"}, "description"),
    ({**good(1), "title": ["x"]}, "title"),
    ({**good(1), "scope": []}, "scope"),
    ({**good(1), "scope": "src/a.ts"}, "scope"),
    ({**good(1), "scope": [f"f{i}.ts" for i in range(50)]}, "more than"),
    ({**good(1), "priority": 0}, "outside"),
    ({**good(1), "priority": 11}, "outside"),
    ({**good(1), "priority": "high"}, "integer"),
    ({**good(1), "priority": True}, "integer"),
    ({**good(1), "priority": 2.5}, "integer"),
    ({**good(1), "feature_ids": ["nope-404"]}, "unknown feature"),
    ({**good(1), "feature_ids": "world-001 ui-001"}, "unknown feature"),
    ({**good(1), "feature_ids": {"a": 1}}, "list"),
    ({**good(1), "kind": "refactor"}, "kind"),
    ({**good(1), "acceptance": [1, 2]}, "acceptance"),
])
def test_invalid_tasks_name_their_reason(raw, fragment):
    with pytest.raises(InvalidTask) as exc:
        validate_task(raw, KNOWN)
    assert fragment in str(exc.value)


def test_defaults_and_coercions():
    raw = {"title": " T ", "description": "D", "scope": ["a.ts", "./a.ts"], "acceptance": "one check",
           "priority": 4.0}
    draft = validate_task(raw, KNOWN)
    assert (draft.title, draft.scope, draft.acceptance, draft.priority, draft.kind, draft.feature_ids) == (
        "T", ["a.ts"], ["one check"], 4, "feature", [])


def test_a_mixed_reply_keeps_every_valid_task_and_says_why_the_rest_went():
    items = [good(1), {**good(2), "scope": ["../x"]}, 42, {**good(3), "feature_ids": ["ghost"]},
             good(4), {**good(5), "scope": ["/abs"]}, {**good(6), "priority": "urgent"}, None, good(7)]
    result = parse_tasks("Plan:\n```json\n" + json.dumps(items) + "\n```", KNOWN, 10)
    assert [t.title for t in result.tasks] == ["Task 1", "Task 4", "Task 7"]
    assert [r.index for r in result.rejected] == [1, 2, 3, 5, 6, 7]
    assert all(r.reason for r in result.rejected)


def test_huge_arrays_are_cut_at_the_limit():
    items = [good(i) for i in range(5000)]
    result = parse_tasks(json.dumps(items), KNOWN, 7)
    assert len(result.tasks) == 7
    assert len(result.rejected) == 4993
    assert result.rejected[0].reason.startswith("over the limit")


def test_tool_call_arguments_are_read_when_content_is_empty():
    from agentswarm.planning.parsing import reply_text

    assert reply_text(None, ['{"tasks": []}']) == '{"tasks": []}'
    assert reply_text("[]", ['{"tasks": [1]}']) == "[]"
