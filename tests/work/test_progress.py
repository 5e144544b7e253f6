"""The live transcript tail: whole lines only, overlong lines cut, a cap, secrets scrubbed; and the tailer
reading a real sandbox's file into real Postgres rows, whatever the agent puts in the file's place."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from agentswarm.db.models import LiveStep, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.lifecycle.progress import live_transcript
from agentswarm.sandbox import SandboxHandle, get_backend
from agentswarm.sandbox.local import LocalSandboxBackend
from agentswarm.work.progress import TRANSCRIPT_NAME, LiveProgress, TranscriptTail, live_progress
from tests.support.runs import start
from tests.support.waiting import wait_for

KEY = "sk-orch-LLM/key+0123456789="


def ev(kind: str, **data: object) -> bytes:
    return (json.dumps({"t": 1.0, "kind": kind, **data}) + "\n").encode()


def pump(tail: TranscriptTail, data: bytes, beats: int = 100) -> list[dict]:
    """Feed the tail as the tailer would, beat after beat, from a file holding `data`; the events kept."""
    kept: list[dict] = []
    for _ in range(beats):
        piece = tail.feed(data[tail.offset : tail.offset + tail.read_bytes])
        if piece is not None:
            assert piece.offset == tail.offset and piece.events == len(piece.lines.splitlines())
            kept += [json.loads(line) for line in piece.lines.splitlines()]
    return kept


def test_only_whole_lines_are_kept_and_a_partial_line_waits_for_the_next_beat() -> None:
    tail = TranscriptTail(10_000, secrets=[], read_bytes=1000)
    whole = ev("assistant", content="hi") + ev("tool", name="run", result="ok")
    piece = tail.feed(whole + b'{"t": 2.0, "kind": "no')
    assert piece is not None and piece.lines == whole.decode() and piece.events == 2
    assert tail.offset == len(whole)
    assert tail.feed(b'{"t": 2.0, "kind": "no') is None and tail.offset == len(whole)  # still being written
    rest = tail.feed(b'{"t": 2.0, "kind": "note"}\n')
    assert rest is not None and json.loads(rest.lines)["kind"] == "note" and tail.offset == len(whole) + 27
    assert tail.feed(b"") is None


def test_a_line_longer_than_a_read_is_left_out_and_the_tail_moves_on() -> None:
    tail = TranscriptTail(10_000, secrets=[KEY], read_bytes=64)
    data = ev("note", a=1) + ev("tool", result="y" * 300 + KEY[:10]) + ev("assistant", content="after")
    kept = pump(tail, data)
    assert [e["kind"] for e in kept] == ["note", "note", "assistant"]
    assert kept[1]["event"] == "line_cut" and kept[1]["cut_kind"] == "tool"
    assert "y" * 20 not in json.dumps(kept)  # nothing of the cut line: its other half could hide a secret's
    assert tail.offset == len(data) and not tail.skipping
    # A long line that ends exactly at a read's edge, then more.
    tail = TranscriptTail(10_000, secrets=[], read_bytes=64)
    edge = b'{"kind": "tool", "r": "' + b"z" * (64 - 26) + b'"}\n'
    assert len(edge) == 64
    assert [e["kind"] for e in pump(tail, edge + ev("note"))] == ["tool", "note"]


def test_the_cap_ends_the_tail_with_one_truncated_line() -> None:
    line = ev("tool", result="r" * 40)
    tail = TranscriptTail(3 * len(line) + 5, secrets=[], read_bytes=1000)
    kept = pump(tail, line * 10)
    assert [e["kind"] for e in kept] == ["tool", "tool", "tool", "truncated"]
    assert "cap" in kept[-1]["note"] and tail.done
    assert tail.feed(line) is None  # nothing more, ever
    assert TranscriptTail(0, secrets=[]).feed(line) is None  # a cap of 0: off


def test_every_form_of_a_secret_is_scrubbed_and_text_is_cleaned_for_postgres() -> None:
    tail = TranscriptTail(100_000, secrets=[KEY], read_bytes=10_000)
    b64 = base64.b64encode(KEY.encode() + b"!").decode()
    data = (ev("assistant", content=f"the key is {KEY}") + ev("tool", result=f"env: {b64} {KEY.encode().hex()}")
            + b'{"kind": "tool", "result": "nul \x00 and a lone half \xed\xa0\x80 end"}\n')
    piece = tail.feed(data)
    assert piece is not None and piece.events == 3
    assert KEY not in piece.lines and b64[4:20] not in piece.lines and KEY.encode().hex() not in piece.lines
    assert piece.lines.count("***") >= 3
    assert "\x00" not in piece.lines and "\ufffd" in piece.lines and "end" in piece.lines
    piece.lines.encode("utf-8")  # no lone surrogate left


# -- the tailer on a real sandbox and real Postgres ------------------------------------------------------


class Gate:
    """What the tailer reads of the orchestrator's LLM gate: the calls it has passed."""

    def __init__(self) -> None:
        self.calls: list[object] = []


@pytest.fixture
def running(db, make_settings, tmp_path):
    """A running task (attempt 1), its unisolated local sandbox, and the settings."""
    settings = make_settings(heartbeat_interval_s=0.1, llm_api_key=KEY)
    run_id = start(settings)
    with session_scope(db) as s:
        task = Task(run_id=run_id, description="d", branch="x", status=TaskStatus.running, attempts=1)
        s.add(task)
        s.flush()
        task_id = task.id
    backend = get_backend("local", {"root": tmp_path / "sandboxes", "isolation": "none"})
    sb = backend.create(run_id=run_id, task_id=task_id, attempt=1, env={})
    yield task_id, backend, sb, settings
    backend.terminate(sb)


def _append(sb: SandboxHandle, data: bytes) -> None:
    with open(Path(sb.workdir) / TRANSCRIPT_NAME, "ab") as f:
        f.write(data)


def _rows(task_id: str) -> list[LiveStep]:
    with session_scope() as s:
        return list(s.scalars(select(LiveStep).where(LiveStep.task_id == task_id).order_by(LiveStep.id)))


def test_each_beat_with_new_lines_stores_one_row(running) -> None:
    task_id, backend, sb, settings = running
    gate = Gate()
    progress = LiveProgress(backend, sb, task_id, 1, interval_s=1, cap_bytes=10_000, secrets=settings.secrets(),
                            gate=gate)  # type: ignore[arg-type]  # only .calls is read
    assert progress.beat() is False  # no transcript yet
    _append(sb, ev("assistant", content=f"step one with {KEY}") + b'{"kind": "tool", "na')
    gate.calls += [1, 2]
    assert progress.beat() is True
    assert progress.beat() is False  # nothing new: no row
    _append(sb, b'me": "run"}\n' + ev("assistant", content="step two"))
    gate.calls.append(3)
    assert progress.beat() is True
    rows = _rows(task_id)
    assert [(r.attempt, r.events, r.gate_calls) for r in rows] == [(1, 1, 2), (1, 2, 3)]
    assert rows[1].offset == os.path.getsize(Path(sb.workdir) / TRANSCRIPT_NAME)
    with session_scope() as s:
        text = live_transcript(s, task_id, 1)
    assert [json.loads(line)["kind"] for line in text.splitlines()] == ["assistant", "tool", "assistant"]
    assert KEY not in text and "***" in text


@pytest.mark.parametrize("plant", ["symlink", "fifo", "directory"])
def test_a_link_fifo_or_directory_in_place_of_the_transcript_is_refused_without_hanging(running, tmp_path,
                                                                                          plant) -> None:
    task_id, backend, sb, settings = running
    target = Path(sb.workdir) / TRANSCRIPT_NAME
    outside = tmp_path / "orchestrator.txt"
    outside.write_bytes(ev("note", leaked=KEY) * 3)
    {"symlink": lambda: os.symlink(outside, target), "fifo": lambda: os.mkfifo(target),
     "directory": lambda: target.mkdir()}[plant]()
    progress = LiveProgress(backend, sb, task_id, 1, interval_s=1, cap_bytes=10_000, secrets=[])
    done: list[bool] = []
    beat = threading.Thread(target=lambda: done.append(progress.beat()), daemon=True)
    beat.start()
    beat.join(5)
    assert done == [False], "the beat hung or stored something"
    assert _rows(task_id) == [] and progress.tail.offset == 0


def test_a_failed_read_is_a_warning_not_an_error(running, caplog) -> None:
    task_id, backend, sb, settings = running
    progress = LiveProgress(backend, sb, task_id, 1, interval_s=1, cap_bytes=10_000, secrets=[])
    backend.terminate(sb)  # the sandbox is gone under the tailer
    with caplog.at_level(logging.WARNING, logger="agentswarm.work.progress"):
        assert progress.beat() is False
    assert "live transcript" in caplog.text


def test_lines_whose_insert_failed_are_stored_by_the_next_beat(running, monkeypatch) -> None:
    task_id, backend, sb, settings = running
    progress = LiveProgress(backend, sb, task_id, 1, interval_s=1, cap_bytes=10_000, secrets=[])
    _append(sb, ev("assistant", content="one") + ev("tool", name="run"))

    def refused(*args, **kwargs):
        raise OSError("postgres went away")

    monkeypatch.setattr("agentswarm.work.progress.add_live_step", refused)
    assert progress.beat() is False and progress.tail.offset == 0
    monkeypatch.undo()
    assert progress.beat() is True and [r.events for r in _rows(task_id)] == [2]


def test_the_thread_beats_while_the_attempt_runs_and_a_last_read_catches_up(running) -> None:
    task_id, backend, sb, settings = running
    assert isinstance(backend, LocalSandboxBackend)
    with live_progress(backend, sb, task_id, 1, settings) as progress:
        _append(sb, ev("assistant", content="thinking"))
        wait_for(lambda: len(_rows(task_id)) == 1, timeout=5)  # the thread's beat, while the block runs
        for i in range(30):  # more than one read's worth written just before the end
            _append(sb, ev("tool", result=f"{i}:" + "x" * 4000))
        started = time.monotonic()
    assert time.monotonic() - started < 5 and not progress._thread.is_alive()  # type: ignore[union-attr]
    with session_scope() as s:
        lines = live_transcript(s, task_id, 1).splitlines()
        stored = s.scalar(select(func.count()).select_from(LiveStep).where(LiveStep.task_id == task_id))
    assert len(lines) == 31 and json.loads(lines[-1])["result"].startswith("29:")
    assert stored is not None and stored >= 3  # 120 KB in reads of 64 KiB
    _append(sb, ev("note", event="late"))
    assert progress.beat() is False and len(_rows(task_id)) == stored  # closed: nothing after the last read
