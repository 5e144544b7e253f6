"""The four prompts: snapshots of their rendering, and errors for wrong variables.

Regenerate the snapshots after a deliberate prompt change with UPDATE_SNAPSHOTS=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentswarm import prompts
from agentswarm.prompts import (
    PromptError,
    list_prompts,
    prompt_variables,
    render_messages,
    render_prompt,
    render_worker_task_message,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"
FILE_TREE = "index.html\npackage.json\nsrc/index.ts\nsrc/world/chunk.ts"
FIXED: dict[str, dict] = {
    "root-planner": {
        "features": [{"id": "world-001", "title": "Chunk storage", "status": "pending", "priority": 2,
                      "files": ["src/world/chunk.ts"], "acceptance": ["tests pass"], "dependencies": []}],
        "file_tree": FILE_TREE,
        "recent_commits": "a1b2c3d Add WebGL2 context",
        "in_flight": [{"title": "Add key bindings", "scope": ["src/input/keys.ts"], "feature_ids": ["input-001"]}],
        "recent_failures": [{"title": "Add fog", "error": "timeout after 1800s"}],
        "max_tasks": 8,
    },
    "subplanner": {
        "task": {"title": "Add terrain", "description": "Noise and biomes.", "scope": ["src/world/noise.ts"],
                 "acceptance": ["tests pass"], "priority": 4, "feature_ids": ["world-014"], "kind": "feature"},
        "file_tree": FILE_TREE, "max_children": 4, "depth": 1, "max_depth": 3,
    },
    "worker": {"agents_md": "# AGENTS.md\n\nStrict TypeScript, no default exports."},
    "reconciler": {
        "build_output": "src/a.ts(1,2): error TS2304: Cannot find name 'x'.",
        "file_tree": FILE_TREE,
        "open_fixes": [],
        "max_tasks": 5,
    },
}
FIRST_LINES = {
    "root-planner": "# AgentSwarm root planner",
    "subplanner": "# AgentSwarm subplanner",
    "worker": "# AgentSwarm worker",
    "reconciler": "# AgentSwarm reconciler",
}


@pytest.mark.parametrize("name", list_prompts())
def test_rendered_prompt_matches_its_snapshot(name):
    text = render_prompt(name, **FIXED[name])
    snapshot = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        snapshot.write_text(text, encoding="utf-8")
    assert snapshot.exists(), f"no snapshot for {name}: run with UPDATE_SNAPSHOTS=1"
    assert text == snapshot.read_text(encoding="utf-8"), f"{name} changed: review it, then UPDATE_SNAPSHOTS=1"


@pytest.mark.parametrize("name", list_prompts())
def test_each_prompt_starts_with_its_role_line_and_fills_every_placeholder(name):
    text = render_prompt(name, **FIXED[name])
    assert text.splitlines()[0] == FIRST_LINES[name]
    assert "{{" not in text
    messages = render_messages(name, **FIXED[name])
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith(FIRST_LINES[name])
    assert prompts.INPUT_MARKER not in json.dumps(messages)


def test_prompt_variables_are_the_documented_ones():
    assert {n: prompt_variables(n) for n in list_prompts()} == {n: set(v) for n, v in FIXED.items()}
    for name, variables in FIXED.items():
        for var in variables:
            assert var in (prompts.__doc__ or ""), f"{var} of {name} is not documented in prompts.py"


def test_a_missing_or_extra_variable_is_named():
    args = dict(FIXED["reconciler"])
    del args["open_fixes"]
    with pytest.raises(PromptError, match=r"prompt 'reconciler': missing variable\(s\) open_fixes"):
        render_prompt("reconciler", **args)
    with pytest.raises(PromptError, match=r"unexpected variable\(s\) colour"):
        render_prompt("worker", agents_md="x", colour="blue")
    with pytest.raises(PromptError, match="variable agents_md is None"):
        render_prompt("worker", agents_md=None)
    with pytest.raises(PromptError, match="unknown prompt 'planner'"):
        render_prompt("planner")


def test_values_are_inserted_once_and_structures_as_json():
    args = dict(FIXED["reconciler"], build_output="weird {{file_tree}} in output", open_fixes=[{"scope": ["a.ts"]}])
    text = render_prompt("reconciler", **args)
    assert "weird {{file_tree}} in output" in text
    assert '"scope": [\n      "a.ts"' in text


def test_prompts_dir_can_be_overridden(tmp_path, monkeypatch):
    (tmp_path / "worker.md").write_text("# AgentSwarm worker\nCustom {{agents_md}} and {{ mood }}.\n")
    monkeypatch.setenv("AGENTSWARM_PROMPTS_DIR", str(tmp_path))
    assert prompt_variables("worker") == {"agents_md", "mood"}
    assert render_prompt("worker", agents_md="A", mood="calm") == "# AgentSwarm worker\nCustom A and calm.\n"
    with pytest.raises(PromptError, match="subplanner.md does not exist"):
        render_prompt("subplanner")


def test_worker_prompt_names_the_agent_tools_exactly():
    text = render_prompt("worker", agents_md="")
    for signature in ("read_file {path, start_line?, end_line?}", "write_file {path, content}",
                      "edit_file {path, old, new}", "list_files {path?}", "search {pattern, path?}",
                      "run {command, timeout_s?}", "finish {status, summary}"):
        assert signature in text


def test_worker_task_message_carries_the_task_as_tagged_json():
    task = {"id": "t-9", "title": "Add hotbar", "description": "Nine slots.", "scope": ["src/ui/hotbar.ts"],
            "acceptance": ["`npx vitest run src/ui/hotbar.test.ts` passes"], "priority": 3, "kind": "feature",
            "llm": {"base_url": "http://x", "model": "glm-5"}, "repo_url": "file:///repo", "parent_id": None}
    text = render_worker_task_message(task)
    inner = text[text.index("<task>") + len("<task>"):text.index("</task>")]
    shown = json.loads(inner)
    assert shown == {k: task[k] for k in ("id", "title", "description", "scope", "acceptance", "priority", "kind")}
    assert "read_file, write_file, edit_file, list_files, search, run, finish" in text
    assert "src/ui/hotbar.ts" in text.split("</task>")[1]
    with pytest.raises(PromptError, match="title or a description"):
        render_worker_task_message({"scope": []})
    with pytest.raises(PromptError, match="scope must be a list"):
        render_worker_task_message({"title": "x", "scope": "src/a.ts"})
