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


@pytest.mark.parametrize("text", ["", "   ", "I cannot plan anything today.", '[{"title": "cut before it closed"',
                                  "<think>still thinking when the tokens ran out [1, 2",
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


# -- replies as real servers send them (issue 17) ---------------------------------------------------

SIX = [good(i) for i in range(1, 7)]


@pytest.mark.parametrize(("text", "repairs"), [
    (json.dumps(SIX, indent=2).replace("}\n]", "},\n]"), ["trailing commas"]),
    (json.dumps(SIX).replace('"], ', '",], '), ["trailing commas"]),
    ("// the plan\n" + json.dumps(SIX, indent=2).replace('"kind"', '/* why */ "kind"'), ["comments"]),
    (repr(SIX), ["single quotes"]),
    ("```json\n" + json.dumps(SIX).replace("3, ", "3, // urgent\n") + "\n```", ["comments"]),
    (json.dumps(SIX).replace('"Do thing 2"', '"Do thing 2\n  in two lines"'), ["line breaks inside strings"]),
])
def test_common_json_slips_are_repaired_and_every_task_kept(text, repairs):
    result = parse_tasks(text, KNOWN, 10)
    assert [t.title for t in result.tasks] == [f"Task {i}" for i in range(1, 7)]
    assert result.rejected == [] and result.repairs == repairs and result.cut is None


@pytest.mark.parametrize("text", [
    json.dumps(SIX).replace('", "scope"', '" "scope"', 3),  # missing commas: no guess at structure
    "[" + json.dumps(SIX)[1:].replace("}, {", "} {"),
    "Here:\n```json\n" + json.dumps(SIX).replace('"title"', "title") + "\n```",
])
def test_json_that_cannot_be_repaired_is_rejected_whole_with_a_reason(text):
    with pytest.raises(UnparseableReply, match="malformed even after repair") as info:
        parse_tasks(text, KNOWN, 10)
    assert "line 1 column" in str(info.value)


def test_a_reply_cut_inside_its_json_keeps_only_the_complete_tasks_and_says_so():
    whole = json.dumps(SIX, indent=2)
    cut = whole[:whole.index('"Do thing 4"') + 5]  # inside task 4
    result = parse_tasks(cut, KNOWN, 10)
    assert [t.title for t in result.tasks] == ["Task 1", "Task 2", "Task 3"]
    assert result.cut and "cut off inside its JSON" in result.cut and "3 complete task(s)" in result.cut
    assert [r.index for r in result.rejected] == [3] and result.rejected[0].reason == result.cut
    wrapped = json.dumps({"tasks": SIX})
    result = parse_tasks(wrapped[:wrapped.index('"Task 3"')], KNOWN, 10)
    assert [t.title for t in result.tasks] == ["Task 1", "Task 2"] and result.cut


def test_a_cut_lone_object_is_not_taken_for_a_task():
    text = json.dumps(good(1))
    with pytest.raises(UnparseableReply, match="before its first complete task"):
        parse_tasks(text[:text.index('"acceptance"')], KNOWN, 10)


def test_a_reply_longer_than_the_cap_keeps_the_tasks_before_the_cap(monkeypatch):
    monkeypatch.setattr("agentswarm.planning.reading.MAX_REPLY_CHARS", 2000)
    items = [good(i, description="x" * 150) for i in range(40)]
    result = parse_tasks(json.dumps(items), KNOWN, 100)
    assert 5 < len(result.tasks) < 40 and [t.title for t in result.tasks] == [f"Task {i}" for i in
                                                                              range(len(result.tasks))]
    assert "more than 2000 characters" in result.cut and result.rejected[-1].reason == result.cut


def test_the_same_task_twice_in_one_reply_is_merged():
    a = good(1, feature_ids=[], acceptance=["builds"], priority=4)
    b = {**a, "acceptance": ["tests pass"], "priority": 2}
    c = {**a, "title": "  task 1 ", "description": "Other words", "acceptance": []}
    d = {**a, "title": "Other title"}  # the same description for other work: models reuse boilerplate
    e = {**a, "scope": ["src/elsewhere.ts"]}  # same title, other files: other work
    result = parse_tasks(json.dumps([a, b, c, d, e]), KNOWN, 10)
    assert [(t.title, t.scope) for t in result.tasks] == [
        ("Task 1", ["src/t1.ts"]), ("Other title", ["src/t1.ts"]), ("Task 1", ["src/elsewhere.ts"])]
    merged = result.tasks[0]
    assert merged.acceptance == ["builds", "tests pass"] and merged.priority == 2
    assert [(r.index, r.reason) for r in result.rejected] == [
        (i, "repeats task 0 of this reply: merged into it") for i in (1, 2)]


def test_duplicates_take_no_room_under_the_limit():
    result = parse_tasks(json.dumps([good(1), good(1), good(1), good(2)]), KNOWN, 2)
    assert [t.title for t in result.tasks] == ["Task 1", "Task 2"]


@pytest.mark.parametrize(("over", "title"), [
    ({"description": "Add greedy meshing to ChunkMesher. Merge faces of equal blocks."},
     "Add greedy meshing to ChunkMesher"),
    ({"description": "## Hotbar\n\n- wrap selection around at both ends"}, "Hotbar"),
    ({"description": "word " * 40}, ("word " * 16).strip() + "..."),
    ({"name": "Chunk storage", "description": "Store blocks."}, "Chunk storage"),
])
def test_a_missing_title_is_derived(over, title):
    raw = {k: v for k, v in good(1).items() if k != "title"} | over
    result = parse_tasks(json.dumps([raw, {**raw, "title": None, "scope": ["b.ts"]}]), KNOWN, 10)
    assert [t.title for t in result.tasks] == [title, title]
    assert len(result.tasks[0].title) <= 83
