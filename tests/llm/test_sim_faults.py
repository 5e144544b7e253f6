"""SIM_FAULTS: the simulated worker breaks its branch on demand, says so in a trailer, and fixes it when told."""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentswarm.demo import FakeLLMServer
from agentswarm.demo import fake_llm as fake_llm_module
from agentswarm.demo.sim_faults import (
    FAULT_KINDS,
    FIXED_TRAILER,
    PRESUBMIT_FAILED,
    TRAILER,
    faults_from_env,
    parse_sim_faults,
    roll,
)
from agentswarm.demo.sim_files import SHARED_PATH, shared_line
from agentswarm.demo.simulator import simulate, worker_fault
from agentswarm.ops.cli import cli
from agentswarm.prompts import render_prompt, render_worker_task_message
from tests.target.test_stub_app import TARGET, _copy_target, _node_env

SYSTEM = {"role": "system", "content": render_prompt("worker", agents_md="Strict TypeScript.")}
TASK = {"id": "t-42", "attempt": 1, "title": "Add Chunk block storage", "description": "Chunk class.",
        "scope": ["src/world/chunk.ts", "src/world/chunk.test.ts"]}
# What the built-in agent answers a "complete" finish with when the branch fails its checks.
TSC_FAILURE = (f"{PRESUBMIT_FAILED}: `npx tsc --noEmit` (exit 2). Your branch must pass the gate's checks before it "
               "can land; fix the cause (do not weaken types or delete tests) and call finish again.\n\n"
               "$ npx tsc --noEmit\n"
               "src/world/chunk.ts(18,14): error TS2322: Type 'string' is not assignable to type 'number'.\n")

Presubmit = Callable[[Path], str | None]


def first_turn(task: dict, faults: dict[str, float] | None = None, fault_attempts: int = 0) -> list[dict]:
    body = {"messages": [SYSTEM, {"role": "user", "content": render_worker_task_message(task)}]}
    return simulate(body, faults, fault_attempts)["tool_calls"]


def writes(calls: list[dict]) -> dict[str, str]:
    return {c["arguments"]["path"]: c["arguments"]["content"] for c in calls if c["name"] == "write_file"}


def sh(repo: Path, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], cwd=repo, capture_output=True, text=True, timeout=timeout)


def execute(repo: Path, name: str, args: dict) -> str:
    """The agent's tools as far as the simulated worker uses them (run: sh in the repository root)."""
    if name == "write_file":
        path = repo / args["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(args["content"])
        return f"wrote {len(args['content'])} bytes to {args['path']}"
    if name == "run":
        done = sh(repo, args["command"], args.get("timeout_s", 30))
        return f"exit code {done.returncode}\n{done.stdout}{done.stderr}"
    raise AssertionError(f"unexpected tool {name}")


def drive(repo: Path, task: dict, faults: dict[str, float] | None = None, fault_attempts: int = 0,
          presubmit: Presubmit | None = None) -> tuple[dict, list[dict]]:
    """Run the worker loop as the built-in agent does; `presubmit` answers each complete finish (None: passed)."""
    messages = [SYSTEM, {"role": "user", "content": render_worker_task_message(task)}]
    for step in range(12):
        reply = simulate({"messages": messages}, faults, fault_attempts)
        calls = [{"id": f"c{step}-{i}", "type": "function",
                  "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                 for i, c in enumerate(reply["tool_calls"])]
        messages.append({"role": "assistant", "content": reply["content"], "tool_calls": calls})
        for wire, call in zip(calls, reply["tool_calls"], strict=True):
            if call["name"] == "finish":
                failure = presubmit(repo) if presubmit and call["arguments"]["status"] == "complete" else None
                if failure is None:
                    return call["arguments"], messages
                result = failure
            else:
                result = execute(repo, call["name"], call["arguments"])
            messages.append({"role": "tool", "tool_call_id": wire["id"], "content": result})
    raise AssertionError("the simulated worker never finished")


def tool_names(messages: list[dict]) -> list[list[str]]:
    return [[c["function"]["name"] for c in m["tool_calls"]] for m in messages if m["role"] == "assistant"]


def trailer_paragraph(summary: str) -> str:
    return summary.rstrip().split("\n\n")[-1]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "src").mkdir()
    (tmp_path / SHARED_PATH).write_text('export const simShared = "base";\n')
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"],
                   check=True)
    return tmp_path


# -- parsing and rolling --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "error"), [
    ("typo:0.1", "unknown fault kind 'typo'"),
    ("type:lots", "the rate must be a number"),
    ("type:1.5", "between 0 and 1"),
    ("type:-0.1", "between 0 and 1"),
    ("type", "must be kind:rate"),
    ("type:0.1,type:0.2", "given twice"),
    ("type:0.6,test:0.5", "more than 1"),
])
def test_parse_rejects_bad_specs(text, error):
    with pytest.raises(ValueError, match=error):
        parse_sim_faults(text)


def test_parse_accepts_the_documented_spec():
    assert parse_sim_faults("") == {}
    assert parse_sim_faults(" Type:0.08, test:0.04,semantic:0.03,flaky:0.02,shared:0.05 ,") == {
        "type": 0.08, "test": 0.04, "semantic": 0.03, "flaky": 0.02, "shared": 0.05}


def test_env_values_are_parsed_and_bad_ones_name_the_variable():
    assert faults_from_env({}) == ({}, 0)
    assert faults_from_env({"SIM_FAULTS": "type:0.5", "SIM_FAULT_ATTEMPTS": "2"}) == ({"type": 0.5}, 2)
    with pytest.raises(ValueError, match=r"^SIM_FAULTS='type:2' is not valid: .*between 0 and 1"):
        faults_from_env({"SIM_FAULTS": "type:2"})
    for bad in ("x", "-1", "1.5"):
        with pytest.raises(ValueError, match="^SIM_FAULT_ATTEMPTS="):
            faults_from_env({"SIM_FAULT_ATTEMPTS": bad})


def test_roll_is_deterministic_and_rerolls_by_attempt():
    rates = {"type": 0.5, "test": 0.5}
    assert [roll(rates, "t-1", 1) for _ in range(5)] == [roll(rates, "t-1", 1)] * 5
    assert roll({}, "t-1", 1) is None and roll({"type": 0.0}, "t-1", 1) is None
    assert roll({"shared": 1.0}, "t-1", 7) == "shared"
    ids = [f"task-{i}" for i in range(200)]
    firsts = [roll(rates, i, 1) for i in ids]
    seconds = [roll(rates, i, 2) for i in ids]
    assert firsts == [roll(rates, i, 1) for i in ids]
    assert 60 < sum(a != b for a, b in zip(firsts, seconds, strict=True)) < 140  # independent rolls: about half


def test_observed_frequencies_match_the_rates():
    rates = parse_sim_faults("type:0.2,test:0.1,semantic:0.05,flaky:0.05,shared:0.1")
    counts = collections.Counter(roll(rates, f"{i:08x}-task", 1) for i in range(2000))
    for kind in FAULT_KINDS:
        assert abs(counts[kind] / 2000 - rates[kind]) < 0.03, (kind, counts)
    assert abs(counts[None] / 2000 - 0.5) < 0.03, counts


# -- the faults in the files ------------------------------------------------------------------------


def test_no_faults_answers_exactly_as_before():
    clean = first_turn(TASK)
    for faults in (None, {}, {"type": 0.0, "shared": 0.0}):
        assert first_turn(TASK, faults) == clean
    assert first_turn(TASK, {"type": 1.0}, fault_attempts=0) != clean
    assert [c["name"] for c in clean] == ["write_file", "write_file"]


def test_type_fault_breaks_the_source_only(repo):
    calls = first_turn(TASK, {"type": 1.0})
    files, clean = writes(calls), writes(first_turn(TASK))
    assert files["src/world/chunk.test.ts"] == clean["src/world/chunk.test.ts"]
    assert files["src/world/chunk.ts"] == clean["src/world/chunk.ts"] + (
        '\nexport const chunkChecked: number = "Add Chunk block storage";\n')
    finish, _ = drive(repo, TASK, {"type": 1.0})
    assert finish["status"] == "complete"
    assert trailer_paragraph(finish["summary"]) == f"{TRAILER}: type"


def test_test_fault_adds_a_test_that_always_fails(repo):
    files, clean = writes(first_turn(TASK, {"test": 1.0})), writes(first_turn(TASK))
    assert files["src/world/chunk.ts"] == clean["src/world/chunk.ts"]
    extra = files["src/world/chunk.test.ts"][len(clean["src/world/chunk.test.ts"]):]
    assert files["src/world/chunk.test.ts"].startswith(clean["src/world/chunk.test.ts"])
    assert re.search(r'it\(".+", \(\) => \{\n  expect\("Add Chunk block storage"\.length\)'
                     r'\.toBe\("Add Chunk block storage"\.length \+ 1\);\n\}\);\n$', extra), extra
    finish, _ = drive(repo, TASK, {"test": 1.0})
    assert trailer_paragraph(finish["summary"]) == f"{TRAILER}: test"


def test_semantic_fault_declares_the_global_of_its_pair_with_the_task_id(repo):
    files, clean = writes(first_turn(TASK, {"semantic": 1.0})), writes(first_turn(TASK))
    assert files["src/world/chunk.ts"] == clean["src/world/chunk.ts"] + (
        '\ndeclare global {\n  interface SimSwarmShared_task_t_42 {\n    owner: "t-42";\n  }\n}\n')
    assert files["src/world/chunk.test.ts"] == clean["src/world/chunk.test.ts"]
    finish, _ = drive(repo, TASK, {"semantic": 1.0})
    assert trailer_paragraph(finish["summary"]) == f"{TRAILER}: semantic\nSim-Pair: task_t_42"
    # Branches started from the same main are a pair: they share the interface (and clash).
    based = {**TASK, "base_sha": "0123456789abcdef" * 2}
    assert "interface SimSwarmShared_0123456789ab {" in writes(first_turn(based, {"semantic": 1.0}))["src/world/chunk.ts"]


def test_flaky_fault_adds_a_random_test_named_flaky(repo):
    files, clean = writes(first_turn(TASK, {"flaky": 1.0})), writes(first_turn(TASK))
    extra = files["src/world/chunk.test.ts"][len(clean["src/world/chunk.test.ts"]):]
    assert re.search(r'it\("flaky: [^"]+", .*Math\.random\(\)\)\.toBeGreaterThanOrEqual\(0\.3\)', extra, re.S)
    assert files["src/world/chunk.ts"] == clean["src/world/chunk.ts"]
    finish, _ = drive(repo, TASK, {"flaky": 1.0})
    assert trailer_paragraph(finish["summary"]) == f"{TRAILER}: flaky"


def test_shared_fault_appends_a_line_outside_the_scope(repo):
    calls = first_turn(TASK, {"shared": 1.0})
    assert writes(calls) == writes(first_turn(TASK))  # the scope itself is clean
    assert [c["name"] for c in calls] == ["write_file", "write_file", "run"]
    finish, messages = drive(repo, TASK, {"shared": 1.0})
    assert (repo / SHARED_PATH).read_text() == (
        'export const simShared = "base";\nexport const sim_t_42 = "Add Chunk block storage";\n')
    assert shared_line("t-42", "Add Chunk block storage") in (repo / SHARED_PATH).read_text()
    assert tool_names(messages) == [["write_file", "write_file", "run"], ["run"], ["finish"]]
    assert trailer_paragraph(finish["summary"]) == f"{TRAILER}: shared"


def test_shared_line_quotes_any_title(repo):
    task = {**TASK, "id": "9f1c-77", "title": "Quote 'single' \"double\" $HOME `tick` \\ é"}
    drive(repo, task, {"shared": 1.0})
    line = (repo / SHARED_PATH).read_text().splitlines()[-1]
    assert line == 'export const sim_9f1c_77 = "Quote \'single\' \\"double\\" $HOME `tick` \\\\ \\u00e9";'


@pytest.mark.parametrize(("kind", "scope"), [
    ("type", ["src/world/chunk.test.ts", "README.md"]),
    ("semantic", ["src/types.d.ts", "docs/notes.md"]),
    ("test", ["src/world/chunk.ts"]),
    ("flaky", ["src/world/chunk.ts", "README.md"]),
])
def test_a_fault_that_does_not_fit_the_scope_is_no_fault(repo, kind, scope):
    task = {**TASK, "scope": scope}
    assert worker_fault({kind: 1.0}, "t-42", 1, scope) is None
    assert first_turn(task, {kind: 1.0}) == first_turn(task)
    finish, _ = drive(repo, task, {kind: 1.0})
    assert "Sim-" not in finish["summary"]


def test_fault_attempts_limits_which_attempts_break(repo):
    faults = {"type": 1.0}
    clean = first_turn(TASK)
    assert first_turn({**TASK, "attempt": 1}, faults, fault_attempts=1) != clean
    assert first_turn({k: v for k, v in TASK.items() if k != "attempt"}, faults, 1) != clean  # absent: attempt 1
    assert first_turn({**TASK, "attempt": 2}, faults, fault_attempts=1) == clean
    assert first_turn({**TASK, "attempt": 3}, faults, fault_attempts=2) == clean
    assert first_turn({**TASK, "attempt": 5}, faults, fault_attempts=0) != clean  # 0: every attempt
    finish, _ = drive(repo, {**TASK, "attempt": 2}, faults, fault_attempts=1)
    assert "Sim-" not in finish["summary"]


def test_the_roll_follows_task_id_and_attempt():
    faults = {"type": 0.5}
    scope = TASK["scope"]
    kinds = {(i, a): worker_fault(faults, f"id-{i}", a, scope) for i in range(40) for a in (1, 2)}
    assert set(kinds.values()) == {"type", None}
    for (i, a), kind in kinds.items():
        body_task = {**TASK, "id": f"id-{i}", "attempt": a}
        assert (first_turn(body_task, faults) != first_turn(body_task)) == (kind == "type")


# -- presubmit feedback -----------------------------------------------------------------------------


def test_presubmit_failure_gets_a_clean_rewrite_and_sim_fixed(repo):
    answers = iter([TSC_FAILURE, None])
    finish, messages = drive(repo, TASK, {"type": 1.0}, presubmit=lambda _: next(answers))
    assert finish["status"] == "complete"
    assert trailer_paragraph(finish["summary"]) == f"{FIXED_TRAILER}: type"
    assert TRAILER + ":" not in finish["summary"]
    clean = writes(first_turn(TASK))
    assert {p: (repo / p).read_text() for p in clean} == clean
    assert tool_names(messages) == [["write_file", "write_file"], ["run"], ["finish"],
                                    ["write_file", "write_file"], ["run"], ["finish"]]


def test_presubmit_failure_of_a_shared_fault_takes_the_shared_line_back(repo):
    answers = iter([TSC_FAILURE, None])
    finish, messages = drive(repo, TASK, {"shared": 1.0}, presubmit=lambda _: next(answers))
    assert (repo / SHARED_PATH).read_text() == 'export const simShared = "base";\n'
    assert tool_names(messages)[3] == ["write_file", "write_file", "run"]
    assert trailer_paragraph(finish["summary"]) == f"{FIXED_TRAILER}: shared"


def test_presubmit_failure_without_a_fault_rewrites_but_claims_nothing(repo):
    answers = iter([TSC_FAILURE, None])
    finish, _ = drive(repo, TASK, presubmit=lambda _: next(answers))
    assert finish["status"] == "complete" and "Sim-" not in finish["summary"]


def test_a_second_presubmit_failure_gives_up_as_failed(repo):
    seen: list[str] = []

    def always_fails(_: Path) -> str:
        seen.append("x")
        return TSC_FAILURE

    finish, messages = drive(repo, TASK, {"test": 1.0}, presubmit=always_fails)
    assert len(seen) == 2
    assert finish["status"] == "failed"
    assert "Sim-" not in finish["summary"]
    assert "`npx tsc --noEmit` (exit 2)" in finish["summary"]
    assert "error TS2322: Type 'string' is not assignable to type 'number'." in finish["summary"]
    assert tool_names(messages)[-1] == ["finish"] and len(tool_names(messages)) == 7


def test_other_tool_errors_still_end_the_task_as_failed(repo):
    history = [SYSTEM, {"role": "user", "content": render_worker_task_message(TASK)},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "c0", "type": "function", "function": {"name": "finish", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "c0", "content": "Error: You called finish with status \"complete\", "
                                                                  "but the repository has no changes."}]
    final = simulate({"messages": history}, {"type": 1.0})["tool_calls"][0]
    assert final["name"] == "finish" and final["arguments"]["status"] == "failed"
    assert "A tool failed: Error: You called finish" in final["arguments"]["summary"]


def test_the_marker_is_the_one_the_agent_sends():
    checks = pytest.importorskip("agentswarm.agent.checks")
    assert checks.PRESUBMIT_FAILED == PRESUBMIT_FAILED


# -- wiring -------------------------------------------------------------------------------------------


def test_fake_llm_server_passes_faults_to_its_simulator():
    from agentswarm.llm import LLMClient

    messages = [SYSTEM, {"role": "user", "content": render_worker_task_message(TASK)}]
    with FakeLLMServer(sim_faults={"type": 1.0}) as faulty, FakeLLMServer() as plain, \
            FakeLLMServer(sim_faults={"type": 1.0}, sim_fault_attempts=1) as limited:
        broken = LLMClient(faulty.url).chat(messages, tools=[]).tool_calls[0].parsed_arguments()
        clean = LLMClient(plain.url).chat(messages, tools=[]).tool_calls[0].parsed_arguments()
        retry = [SYSTEM, {"role": "user", "content": render_worker_task_message({**TASK, "attempt": 2})}]
        second = LLMClient(limited.url).chat(retry, tools=[]).tool_calls[0].parsed_arguments()
    assert "chunkChecked: number" in broken["content"] and "chunkChecked" not in clean["content"]
    assert second == clean
    with pytest.raises(ValueError, match="built-in simulator"):
        FakeLLMServer([], sim_faults={"type": 1.0})


def test_bad_sim_faults_exit_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("SIM_FAULTS", "typo:0.1")
    with pytest.raises(SystemExit) as exc:
        fake_llm_module.main(["--port", "0"])
    assert str(exc.value).startswith("fake LLM: SIM_FAULTS='typo:0.1' is not valid: unknown fault kind 'typo'")
    assert "\n" not in str(exc.value)
    result = CliRunner().invoke(cli, ["fake-llm", "--port", "0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: SIM_FAULTS='typo:0.1' is not valid: unknown fault kind 'typo'; "
        "use type, test, semantic, flaky, shared"]


def test_serve_forever_reads_the_environment(monkeypatch):
    seen: dict = {}

    class Stop(Exception):
        pass

    class Probe:
        def __init__(self, **kwargs: object) -> None:
            seen.update(kwargs)

        def start(self) -> Probe:
            raise Stop

    monkeypatch.setenv("SIM_FAULTS", "shared:0.25")
    monkeypatch.setenv("SIM_FAULT_ATTEMPTS", "3")
    monkeypatch.setattr(fake_llm_module, "FakeLLMServer", Probe)
    with pytest.raises(Stop):
        fake_llm_module.serve_forever(0)
    assert seen["sim_faults"] == {"shared": 0.25} and seen["sim_fault_attempts"] == 3


# -- the real toolchain -------------------------------------------------------------------------------


def _features() -> list[dict]:
    data = json.loads((TARGET / "FEATURES.json").read_text())
    return data["features"] if isinstance(data, dict) else data


def _task(feature: dict, base: str = "b" * 40) -> dict:
    return {"id": feature["id"], "attempt": 1, "base_sha": base, "title": f"Implement {feature['title']}",
            "description": feature["description"], "scope": feature["files"]}


def _apply(root: Path, calls: list[dict]) -> None:
    for call in calls:
        if call["name"] == "write_file":
            execute(root, "write_file", call["arguments"])
        elif call["name"] == "run":
            assert "exit code 0" in execute(root, "run", call["arguments"]).splitlines()[0]


def _node(root: Path, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], cwd=root, env=_node_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_the_pages_entry_gets_a_line_added_never_a_module_in_its_place(tmp_path):
    """engine-021 has src/index.ts in its scope: a generic module there left the page "booting" for good, so a
    demo's main went red at the reconciler's page check with no fault asked for."""
    boot = "import { start } from './engine/start';\n\nstart();\n"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.ts").write_text(boot)
    task = {**TASK, "id": "engine-021", "title": "Implement Game composition root and boot",
            "scope": ["src/game.ts", "src/index.ts", "src/game.test.ts"]}
    for faults in (None, {"type": 1.0}, {"semantic": 1.0}, {"test": 1.0}):
        calls = first_turn(task, faults)
        assert "src/index.ts" not in writes(calls) and "src/game.ts" in writes(calls)
        _apply(tmp_path, calls)  # every turn adds it again: once is what stays
    assert (tmp_path / "src" / "index.ts").read_text() == (
        boot + '\nexport const indexFeature = "Implement Game composition root and boot";\n')


def test_simulated_features_and_faults_against_the_real_toolchain(tmp_path):
    missing = [tool for tool in ("node", "npm", "npx") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{'/'.join(missing)} not found on PATH: install Node.js >= 20.19 to run tsc and vitest")
    root = tmp_path / "app"
    _copy_target(root)
    install = _node(root, "npm ci --ignore-scripts --no-audit --no-fund", timeout=300)
    if install.returncode != 0 and re.search(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ENETUNREACH",
                                             install.stdout + install.stderr):
        pytest.skip(f"npm ci could not reach the registry: {(install.stdout + install.stderr)[-300:]}")
    assert install.returncode == 0, install.stdout + install.stderr

    # Every FEATURES.json file, as the simulator writes it, in file order: later features rewrite sources
    # whose tests an earlier feature wrote. Each task also takes the shared-file fault, which must compile.
    features = _features()
    for feature in features:
        calls = first_turn(_task(feature), {"shared": 1.0})
        assert writes(calls) == writes(first_turn(_task(feature)))
        _apply(root, calls)
    assert len((root / SHARED_PATH).read_text().splitlines()) == len(features)
    entry = (root / "src" / "index.ts").read_text()  # the page's boot is kept: a line added, nothing replaced
    assert entry.startswith((TARGET / "src" / "index.ts").read_text()) and entry.count("export const indexFeature") == 1
    tsc = _node(root, "npx tsc --noEmit")
    assert tsc.returncode == 0, tsc.stdout[-3000:]
    vitest = _node(root, "npx vitest run --pool=threads --no-isolate")
    assert vitest.returncode == 0, (vitest.stdout + vitest.stderr)[-3000:]
    assert re.search(r"Tests\s+\d+ passed", vitest.stdout), vitest.stdout[-2000:]

    clock, chunk = (next(f for f in features if f["id"] == fid) for fid in ("engine-001", "world-001"))
    source = next(p for p in clock["files"] if not p.endswith(".test.ts"))
    test_file = next(p for p in clock["files"] if p.endswith(".test.ts"))

    _apply(root, first_turn(_task(clock), {"type": 1.0}))
    tsc = _node(root, "npx tsc --noEmit")
    assert tsc.returncode != 0 and f"{source}(" in tsc.stdout and "error TS2322" in tsc.stdout, tsc.stdout
    _apply(root, first_turn(_task(clock)))

    _apply(root, first_turn(_task(clock), {"test": 1.0}))
    vitest = _node(root, f"npx vitest run {test_file}")
    out = vitest.stdout + vitest.stderr
    assert vitest.returncode != 0 and re.search(rf"FAIL\s+{re.escape(test_file)} > counts the letters", out), out
    _apply(root, first_turn(_task(clock)))

    _apply(root, first_turn(_task(clock), {"semantic": 1.0}))
    alone = _node(root, "npx tsc --noEmit")
    assert alone.returncode == 0, alone.stdout
    _apply(root, first_turn(_task(clock)))
    _apply(root, first_turn(_task(chunk), {"semantic": 1.0}))
    alone = _node(root, "npx tsc --noEmit")
    assert alone.returncode == 0, alone.stdout
    _apply(root, first_turn(_task(clock), {"semantic": 1.0}))
    both = _node(root, "npx tsc --noEmit")
    assert both.returncode != 0 and "error TS2717" in both.stdout, both.stdout
    assert "Property 'owner' must be of type" in both.stdout
    _apply(root, first_turn(_task(clock, base="c" * 40), {"semantic": 1.0}))  # started from another main
    apart = _node(root, "npx tsc --noEmit")
    assert apart.returncode == 0, apart.stdout
