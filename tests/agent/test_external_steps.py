"""External agents' own records as transcript steps: Pi's JSON events and mini-swe-agent's trajectory.

The data files are what the real CLIs wrote (Pi 0.73.1 `--mode json`, mini-swe-agent 2.4.6 `-o`) against the
demo simulator, Pi's cut to one of each kind of event; the broken variants are made from them here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from agentswarm.agent.external_steps import MiniSteps, PiSteps, StepWatch
from agentswarm.agent.shell import run_capped
from agentswarm.agent.transcript import Transcript
from agentswarm.control.taskview import render_step

DATA = Path(__file__).parent / "data"
PI_EVENTS = (DATA / "pi-events.jsonl").read_bytes()
TRAJECTORY = (DATA / "mini-trajectory.json").read_text()


def _pi(data: bytes, piece: int = 997, cap: int | None = None) -> list[tuple[str, dict]]:
    src = PiSteps() if cap is None else PiSteps(cap)
    steps = []
    for i in range(0, len(data), piece):
        steps += src.feed(data[i:i + piece])
    return steps + src.finish()


def _lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines()]


def test_pis_events_become_the_builtin_agents_steps_whatever_the_chunking() -> None:
    steps = _pi(PI_EVENTS)
    assert [k for k, _ in steps] == ["assistant", "tool", "assistant", "tool", "assistant"]
    first, result = steps[0][1], steps[1][1]
    [call] = first["tool_calls"]
    assert call["name"] == "bash" and json.loads(call["arguments"])["command"].startswith("mkdir -p src && printf")
    assert first["content"] == "Writing 1 file(s) for 'add a hello module'." and first["finish_reason"] == "toolUse"
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0 and first["step"] == 1
    assert result == {"id": call["id"], "name": "bash", "result": "(no output)"}
    assert steps[3][1]["result"] == "?? src/"
    last = steps[4][1]
    assert last["tool_calls"] == [] and last["finish_reason"] == "stop" and last["content"].startswith("Implemented")
    assert _pi(PI_EVENTS, piece=1) == steps == _pi(PI_EVENTS, piece=len(PI_EVENTS))
    shown = render_step({"kind": "assistant", **first})
    assert "bash({\"command\": \"mkdir -p src" in shown and f"[{first['prompt_tokens']}+" in shown


def test_truncated_malformed_and_unknown_pi_lines_are_skipped() -> None:
    lines = PI_EVENTS.splitlines()
    end = next(i for i, line in enumerate(lines) if b'"message_end","message":{"role":"assistant"' in line)
    noise = [b"not json at all", b"[1, 2]", b"{}", b'{"type":"message_end","message":"flat"}',
             b'{"type":"message_end","message":{"role":"assistant","content":"plain","usage":null}}',
             b'{"type":"message_end","message":{"role":"assistant","content":[7, {"type":"toolCall"}]}}',
             b'{"type":"some_future_event","payload":{"x":1}}', b"Warning: stderr says something", b"\xff\xfe\x00"]
    steps = _pi(b"\n".join(noise + lines[:end] + [lines[end][: len(lines[end]) // 2]]) + b"\n")
    assert [k for k, _ in steps] == ["assistant", "assistant"]  # the two odd-but-whole assistant messages
    assert steps[0][1]["content"] == "plain" and steps[0][1]["prompt_tokens"] == 0
    assert steps[1][1]["tool_calls"] == [{"id": "", "name": "", "arguments": "null"}]
    assert _pi(lines[end][:-40]) == []  # the stream cut mid-line when Pi was killed: nothing, no error


def test_an_error_a_failed_tool_and_a_retry_are_kept() -> None:
    events = _lines(PI_EVENTS)
    done = next(e for e in events if e["type"] == "message_end" and e["message"]["role"] == "assistant")
    done["message"] |= {"stopReason": "error", "errorMessage": "500 upstream went away", "content": []}
    tool = next(e for e in events if e["type"] == "message_end" and e["message"]["role"] == "toolResult")
    tool["message"] |= {"isError": True, "content": [{"type": "text", "text": "bash: nope: command not found"}]}
    retry = {"type": "auto_retry_start", "attempt": 1, "maxAttempts": 3, "delayMs": 2000, "errorMessage": "429"}
    steps = _pi(b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in (done, tool, retry)))
    assert steps[0] == ("assistant", {"step": 1, "content": None, "reasoning": None, "tool_calls": [],
                                      "finish_reason": "error", "prompt_tokens": steps[0][1]["prompt_tokens"],
                                      "completion_tokens": steps[0][1]["completion_tokens"],
                                      "error": "500 upstream went away"})
    assert steps[1][1]["is_error"] is True and steps[1][1]["result"] == "bash: nope: command not found"
    assert steps[2] == ("note", {"event": "agent_retry", "attempt": 1, "error": "429"})


def test_pis_streaming_events_are_dropped_without_being_held_and_an_overlong_event_is_noted() -> None:
    src = PiSteps(cap=64 * 1024)
    update = b'{"type":"message_update","assistantMessageEvent":{"type":"text_delta","delta":"' + b"x" * 65536
    for _ in range(200):  # a 13 MB copy of a growing message, as Pi prints for every token it streams
        assert src.feed(update) == []
        assert len(src.lines.buf) < 1024
    assert src.feed(b'"}}\n') == []
    big = b'{"type":"message_end","message":{"role":"toolResult","content":[{"type":"text","text":"' + b"y" * 70000
    steps = src.feed(big + b'"}]}}\n' + PI_EVENTS)
    assert steps[0] == ("note", {"event": "steps_unread", "note": f"a pi event over {64 * 1024} bytes"})
    assert [k for k, _ in steps[1:]] == ["assistant", "tool", "assistant", "tool", "assistant"]


def test_minis_trajectory_becomes_steps_as_it_grows_and_a_half_written_file_waits(tmp_path: Path) -> None:
    path = tmp_path / "trajectory.json"
    src = MiniSteps(path, poll_s=0)
    assert src.feed(b"") == []  # not written yet
    full = json.loads(TRAJECTORY)
    path.write_text(json.dumps(full | {"messages": full["messages"][:4]}, indent=2))
    early = src.feed(b"")
    assert [k for k, _ in early] == ["assistant", "tool"]  # the system prompt and the task are not steps
    [call] = early[0][1]["tool_calls"]
    assert call["name"] == "bash" and "mkdir -p src" in json.loads(call["arguments"])["command"]
    assert early[0][1]["prompt_tokens"] > 0 and early[0][1]["finish_reason"] == "tool_calls"
    assert early[1][1] == {"id": call["id"], "name": "bash", "result": "", "exit_code": 0}
    assert src.feed(b"") == []  # unchanged
    path.write_text(TRAJECTORY[: len(TRAJECTORY) // 2])  # caught while mini rewrites it
    assert src.feed(b"") == []
    path.write_text(TRAJECTORY)
    later = src.finish()
    assert [k for k, _ in later] == ["assistant", "tool", "assistant", "note"]
    assert later[1][1]["result"] == "?? src/\n"
    assert later[3][1] == {"event": "agent_exit", "exit_status": "Submitted",
                           "summary": "Implemented 'add a hello module': wrote src/hello.ts.\n"}


def test_minis_text_based_actions_and_format_errors_are_steps_too(tmp_path: Path) -> None:
    path = tmp_path / "trajectory.json"
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "the task"},
                {"role": "assistant", "content": "```mswea_bash_command\nls\n```", "extra": {"actions": [{"command": "ls"}]}},
                {"role": "user", "content": "<returncode>0</returncode>", "extra": {"raw_output": "a.txt\n", "returncode": 0}},
                {"role": "assistant", "content": "no block"}, {"role": "user", "content": "Please always provide a block"},
                "junk", {"role": "assistant", "tool_calls": "junk", "extra": {"response": {"choices": "junk"}}}]
    path.write_text(json.dumps({"messages": messages}))
    steps = MiniSteps(path).finish()
    assert [k for k, _ in steps] == ["assistant", "tool", "assistant", "user", "assistant"]
    assert steps[0][1]["tool_calls"] == [{"id": "", "name": "bash", "arguments": '{"command": "ls"}'}]
    assert steps[1][1] == {"id": "", "name": "bash", "result": "a.txt\n", "exit_code": 0}
    assert steps[3][1] == {"content": "Please always provide a block"}
    path.write_text('{"messages": {"not": "a list"}}')
    assert MiniSteps(path).finish() == []


def test_a_reader_that_breaks_leaves_one_note_and_the_run_goes_on(tmp_path: Path) -> None:
    class Broken:
        def feed(self, chunk: bytes) -> list:
            raise KeyError("surprise")

        def finish(self) -> list:
            raise AssertionError("not called after the first failure")

    transcript = Transcript(tmp_path / "t.jsonl", secrets=[])
    watch = StepWatch(Broken(), transcript, "pi")
    watch(b"x")
    watch(b"y")
    watch.finish()
    transcript.close()
    [note] = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert note["event"] == "steps_unread" and note["agent"] == "pi" and "KeyError" in note["error"]


def test_run_capped_shows_the_watcher_every_byte_live_and_ticks_while_quiet(tmp_path: Path) -> None:
    seen: list[bytes] = []
    script = "import sys, time\nfor i in range(3):\n    print('line', i, flush=True)\n    time.sleep(0.5)\n" \
             "sys.stdout.write('x' * 200000)\n"
    res = run_capped([sys.executable, "-c", script], cwd=str(tmp_path), timeout_s=30, env=dict(os.environ),
                     cap_bytes=1024, watch=seen.append)
    data = b"".join(seen)
    assert res.exit_code == 0 and res.dropped_bytes > 0  # the kept output is capped; the watcher saw it all
    assert data == b"line 0\nline 1\nline 2\n" + b"x" * 200000
    assert b"" in seen and seen.index(b"") < len(seen) - 1  # ticks came between the lines
