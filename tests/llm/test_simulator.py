"""The swarm simulator, driven over real HTTP with the real prompts, answers every role by its contract."""

from __future__ import annotations

import json
import subprocess

import jsonschema
import pytest

from agentswarm.demo import FakeLLMServer
from agentswarm.demo.sim_files import file_content
from agentswarm.demo.simulator import simulate
from agentswarm.llm import LLMClient
from agentswarm.prompts import render_messages, render_prompt, render_worker_task_message
from tests.llm.test_sim_faults import execute

TASKS_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["title", "description", "scope", "acceptance", "priority", "feature_ids", "kind"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 120},
            "description": {"type": "string", "minLength": 1},
            "scope": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^[^/\s][^\s]*[^/]$"}},
            "acceptance": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            "priority": {"type": "integer", "minimum": 1, "maximum": 10},
            "feature_ids": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["feature", "fix"]},
        },
    },
}
FEATURES = [
    {"id": "world-001", "title": "Chunk storage", "status": "done", "priority": 1,
     "files": ["src/world/chunk.ts"], "dependencies": []},
    {"id": "world-002", "title": "Chunk meshing", "status": "pending", "priority": 3, "dependencies": ["world-001"],
     "files": ["src/render/mesher.ts", "src/render/mesher.test.ts"], "acceptance": ["mesher tests pass"]},
    {"id": "world-003", "title": "Terrain", "status": "pending", "priority": 2, "dependencies": ["world-002"],
     "files": ["src/world/terrain.ts"]},
    {"id": "player-001", "title": "Player controller", "status": "pending", "priority": 2, "dependencies": [],
     "files": ["src/player/controller.ts", "src/player/controller.test.ts"]},
    {"id": "ui-001", "title": "Hotbar", "status": "pending", "priority": 6, "dependencies": [],
     "files": ["src/ui/hotbar.ts"]},
    {"id": "ui-002", "title": "Hotbar icons", "status": "pending", "priority": 7, "dependencies": [],
     "files": ["src/ui/hotbar.ts", "src/ui/icons.ts"]},
    {"id": "input-001", "title": "Key bindings", "status": "in_progress", "priority": 1, "files": ["src/input/keys.ts"]},
]
BUILD_OUTPUT = """\
> tsc --noEmit
src/render/mesher.ts(4,10): error TS2305: Module '"../world/chunk"' has no exported member 'CHUNK_SIZE'.
src/render/mesher.ts(9,3): error TS2304: Cannot find name 'Face'.
src/physics/collide.ts:2:10 - error TS2305: Module '"../world/chunk"' has no exported member 'CHUNK_SIZE'.
src/ui/hotbar.ts(7,1): error TS1005: ';' expected.
 FAIL  src/ui/hotbar.test.ts > Hotbar > wraps the selection
AssertionError: expected 0 to be 8
 FAIL  src/world/chunk.test.ts > Chunk > stores blocks
Test Files  2 failed | 9 passed (11)
"""


def ask(srv: FakeLLMServer, messages: list[dict]) -> list[dict]:
    reply = LLMClient(srv.url).chat(messages)
    assert reply.reasoning and reply.reasoning not in reply.content
    tasks = json.loads(reply.content)
    jsonschema.validate(tasks, TASKS_SCHEMA)
    return tasks


def planner_messages(max_tasks: int = 10, in_flight: list | None = None) -> list[dict]:
    return render_messages("root-planner", features=FEATURES, file_tree="src/index.ts\nsrc/world/chunk.ts",
                           recent_commits="abc123 Add Chunk storage", in_flight=in_flight or [],
                           recent_failures=[], max_tasks=max_tasks)


def test_root_planner_plans_ready_features_with_disjoint_scopes():
    with FakeLLMServer() as srv:
        tasks = ask(srv, planner_messages())
    by_feature = {t["feature_ids"][0]: t for t in tasks}
    # world-003 waits on world-002, input-001 is in progress, ui-002 shares hotbar.ts with ui-001.
    assert list(by_feature) == ["player-001", "world-002", "ui-001"]
    assert by_feature["world-002"]["scope"] == ["src/render/mesher.ts", "src/render/mesher.test.ts"]
    assert by_feature["world-002"]["acceptance"] == ["mesher tests pass"]
    assert by_feature["player-001"]["priority"] == 2
    scopes = [p for t in tasks for p in t["scope"]]
    assert len(scopes) == len(set(scopes))
    assert all(t["kind"] == "feature" for t in tasks)


def test_root_planner_skips_in_flight_work_and_respects_the_limit():
    in_flight = [{"title": "Implement Player controller", "scope": ["src/player/controller.ts"],
                  "feature_ids": ["player-001"]}, {"title": "x", "scope": ["src/ui/hotbar.ts"], "feature_ids": []}]
    with FakeLLMServer() as srv:
        tasks = ask(srv, planner_messages(max_tasks=5, in_flight=in_flight))
        # player-001 is taken; both hotbar features need src/ui/hotbar.ts, which an agent is editing.
        assert [t["feature_ids"] for t in tasks] == [["world-002"]]
        assert [t["feature_ids"] for t in ask(srv, planner_messages(max_tasks=1))] == [["player-001"]]


def test_root_planner_finds_its_inputs_in_a_single_system_message():
    text = render_prompt("root-planner", features=FEATURES, file_tree="", recent_commits="", in_flight=[],
                         recent_failures=[], max_tasks=2)
    reply = simulate({"messages": [{"role": "system", "content": text}]})
    assert len(json.loads(reply["content"])) == 2


def subplanner_messages(scope: list[str], depth: int = 0, max_depth: int = 3, max_children: int = 4) -> list[dict]:
    task = {"title": "Add terrain noise and biomes", "description": "Terrain.", "scope": scope,
            "acceptance": ["tests pass"], "priority": 4, "feature_ids": ["world-014"], "kind": "feature"}
    return render_messages("subplanner", task=task, file_tree="src/index.ts", max_children=max_children,
                           depth=depth, max_depth=max_depth)


def test_subplanner_keeps_small_tasks_whole():
    with FakeLLMServer() as srv:
        assert ask(srv, subplanner_messages(["src/a.ts", "src/a.test.ts", "src/b.ts"])) == []


def test_subplanner_splits_big_scopes_into_disjoint_covering_children():
    scope = ["src/world/noise.ts", "src/world/noise.test.ts", "src/world/biomes.ts", "src/world/biomes.test.ts",
             "src/world/caves.ts", "src/world/caves.test.ts", "src/world/ores.ts"]
    with FakeLLMServer() as srv:
        children = ask(srv, subplanner_messages(scope, max_children=3))
        assert ask(srv, subplanner_messages(scope, depth=3, max_depth=3)) == []
    assert 2 <= len(children) <= 3
    paths = [p for c in children for p in c["scope"]]
    assert sorted(paths) == sorted(scope)  # disjoint and covering
    for child in children:
        assert child["feature_ids"] == ["world-014"] and child["priority"] == 4
        stems = {p.replace(".test", "") for p in child["scope"]}
        for other in children:
            if other is not child:
                assert not stems & {p.replace(".test", "") for p in other["scope"]}, "a test left its source"


def reconciler_messages(open_fixes: list, max_tasks: int = 5) -> list[dict]:
    return render_messages("reconciler", build_output=BUILD_OUTPUT, file_tree="src/index.ts",
                           open_fixes=open_fixes, max_tasks=max_tasks)


def test_reconciler_files_one_fix_per_failing_file_and_skips_open_fixes():
    with FakeLLMServer() as srv:
        fixes = ask(srv, reconciler_messages([{"title": "Fix chunk test", "scope": ["src/world/chunk.test.ts"]}]))
        limited = ask(srv, reconciler_messages([], max_tasks=2))
    assert [f["scope"] for f in fixes] == [["src/render/mesher.ts"], ["src/physics/collide.ts"],
                                           ["src/ui/hotbar.ts"], ["src/ui/hotbar.test.ts"]]
    assert fixes[0]["title"] == "Fix TS2304, TS2305 in src/render/mesher.ts"
    assert "error TS2304: Cannot find name 'Face'" in fixes[0]["description"]
    assert [f["priority"] for f in fixes] == [1, 1, 1, 2]
    assert all(f["kind"] == "fix" and f["feature_ids"] == [] for f in fixes)
    assert len(limited) == 2


def test_worker_writes_its_scope_checks_git_and_finishes(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    task = {"id": "t-1", "title": "Add Chunk block storage", "description": "Chunk class.",
            "scope": ["src/world/chunk.ts", "src/world/chunk.test.ts", "README.md", "src/a.ts", "src/b.ts"]}
    messages = [{"role": "system", "content": render_prompt("worker", agents_md="Strict TypeScript.")},
                {"role": "user", "content": render_worker_task_message(task)}]
    finished = None
    with FakeLLMServer() as srv:
        client = LLMClient(srv.url)
        for _ in range(6):
            reply = client.chat(messages, tools=[])
            messages.append(reply.assistant_message())
            for call in reply.tool_calls:
                if call.name == "finish":
                    finished = call.parsed_arguments()
                    break
                messages.append({"role": "tool", "tool_call_id": call.id,
                                 "content": execute(tmp_path, call.name, call.parsed_arguments())})
            if finished:
                break
    written = [p for p in task["scope"] if (tmp_path / p).exists()]
    assert written == task["scope"][:4]  # at most four writes
    assert "Add Chunk block storage" in (tmp_path / "src/world/chunk.ts").read_text()
    test_src = (tmp_path / "src/world/chunk.test.ts").read_text()
    assert 'from "vitest"' in test_src and 'from "./chunk"' in test_src
    assert finished is not None and finished["status"] == "complete"
    summary = finished["summary"]
    assert "src/world/chunk.ts" in summary and "files changed." in summary, summary
    assert "git status" not in summary and "exit code" not in summary and "??" not in summary  # no tool noise
    assert [m.get("tool_calls", [{}])[0].get("function", {}).get("name") for m in messages
            if m["role"] == "assistant"] == ["write_file", "run", "finish"]


def test_worker_reports_a_failed_tool_and_a_missing_scope():
    task = {"title": "Add hotbar", "scope": ["src/ui/hotbar.ts"]}
    system = {"role": "system", "content": render_prompt("worker", agents_md="")}
    first = simulate({"messages": [system, {"role": "user", "content": render_worker_task_message(task)}]})
    call = first["tool_calls"][0]
    history = [system, {"role": "user", "content": render_worker_task_message(task)},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c0", "type": "function", "function": {"name": call["name"], "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "c0", "content": "Error: src/ui/hotbar.ts is outside the sandbox"}]
    final = simulate({"messages": history})["tool_calls"][0]
    assert final["name"] == "finish" and final["arguments"]["status"] == "failed"
    assert "outside the sandbox" in final["arguments"]["summary"]
    blocked = simulate({"messages": [system, {"role": "user", "content": render_worker_task_message(
        {"title": "Think hard", "scope": []})}]})["tool_calls"][0]
    assert blocked["arguments"]["status"] == "blocked"


def test_a_generated_test_holds_whichever_task_wrote_its_source():
    # Two features share src/world/world.ts; the one with the test may land before the other rewrites the source.
    scope = ["src/world/world.ts", "src/world/world.test.ts"]
    test_src = file_content("src/world/world.test.ts", "Implement World container", scope)
    later_source = file_content("src/world/world.ts", "Implement a much longer world title", ["src/world/world.ts"])
    assert 'import { world, worldTitle } from "./world";' in test_src
    assert "expect(world({ enabled: true, scale: 2 })).toBe(2 * worldTitle.length);" in test_src
    assert 'export const worldTitle = "Implement a much longer world title";' in later_source
    assert "return Math.max(0, options.scale) * worldTitle.length;" in later_source
    assert str(len("Implement World container")) not in test_src


def test_unknown_role_and_bad_inputs_are_explained():
    reply = simulate({"messages": [{"role": "system", "content": "You are a pirate."}]})
    assert "does not start with an AgentSwarm role line" in reply["content"]
    bad = [{"role": "system", "content": "# AgentSwarm root planner\n"},
           {"role": "user", "content": "<features>{not json</features>"}]
    with pytest.raises(ValueError, match="<features> does not hold valid JSON"):
        simulate({"messages": bad})
