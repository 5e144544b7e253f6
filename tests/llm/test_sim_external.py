"""The simulator answers external agents (mini-swe-agent, Pi) through their bash tool, and the files it
writes are the built-in worker's: run for real in a scratch directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agentswarm.demo.sim_external import MINI_SUBMIT
from agentswarm.demo.sim_files import file_content
from agentswarm.demo.simulator import simulate

TASK = {"id": "t1", "title": "Vector math", "scope": ["src/core/vec.ts", "src/index.ts"]}
PROMPT = f"You are a coding agent.\n\n<task>\n{json.dumps(TASK)}\n</task>\n"
MINI_TOOLS = [{"type": "function", "function": {"name": "bash"}}]
PI_TOOLS = [{"type": "function", "function": {"name": n}} for n in ("read", "bash", "edit", "write")]


def _body(tools: list[dict], turns: int) -> dict:
    messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": PROMPT}]
    for i in range(turns):
        messages += [{"role": "assistant", "content": "", "tool_calls": [{"id": f"c{i}"}]},
                     {"role": "tool", "tool_call_id": f"c{i}", "content": "ok"}]
    return {"messages": messages, "tools": tools}


def _command(reply: dict) -> str:
    (call,) = reply["tool_calls"]
    assert call["name"] == "bash"
    return call["arguments"]["command"]


def test_first_turn_writes_the_scope_in_one_bash_command(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.ts").write_text("export {};\n")
    command = _command(simulate(_body(MINI_TOOLS, 0)))
    subprocess.run(["/bin/sh", "-c", command], cwd=tmp_path, check=True)
    assert (tmp_path / "src/core/vec.ts").read_text() == file_content("src/core/vec.ts", "Vector math", TASK["scope"])
    assert (tmp_path / "src/index.ts").read_text() != "export {};\n"


def test_mini_checks_status_then_submits() -> None:
    assert _command(simulate(_body(MINI_TOOLS, 1))) == "git status --short"
    assert _command(simulate(_body(MINI_TOOLS, 2))).startswith(f"echo {MINI_SUBMIT}")


def test_pi_ends_with_an_answer_without_tool_calls() -> None:
    assert _command(simulate(_body(PI_TOOLS, 0))).startswith("mkdir -p src/core")
    final = simulate(_body(PI_TOOLS, 2))
    assert final["tool_calls"] == [] and "Vector math" in final["content"]


def test_without_a_bash_tool_it_is_not_an_external_worker() -> None:
    assert "nothing to simulate" in simulate(_body([], 0))["content"]
