"""Ranged reads of a file the sandbox's user writes (the live transcript): bounded, and never through a link,
into a FIFO or a directory, whatever the agent puts in the file's place."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from agentswarm.sandbox import SandboxGone, get_backend
from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig


@pytest.fixture
def backend(tmp_path: Path) -> LocalSandboxBackend:
    return get_backend("local", {"root": tmp_path / "sandboxes", "isolation": "none"})


def _bounded(fn, seconds: float = 5.0):
    """fn() in a thread, failing the test if it does not return in time (a read must never wait on a FIFO)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the read hung"
    return out[0]


def test_reads_the_range_asked_for_and_no_more(backend: LocalSandboxBackend) -> None:
    sb = backend.create(run_id="r1", task_id=f"t{uuid.uuid4().hex[:6]}", attempt=1, env={})
    backend.put_file(sb, "transcript.jsonl", b"0123456789")
    assert backend.read_range(sb, "transcript.jsonl", 0, 4) == b"0123"
    assert backend.read_range(sb, "transcript.jsonl", 8, 100) == b"89"
    assert backend.read_range(sb, "transcript.jsonl", 10, 100) == b""
    assert backend.read_range(sb, "transcript.jsonl", 3, 0) == b""
    assert backend.read_range(sb, "absent.jsonl", 0, 10) is None
    backend.put_file(sb, "logs/deep/t.jsonl", b"abc")
    assert backend.read_range(sb, "logs/deep/t.jsonl", 1, 10) == b"bc"
    with pytest.raises(ValueError):
        backend.read_range(sb, "../meta.json", 0, 10)
    with pytest.raises(ValueError):
        backend.read_range(sb, "transcript.jsonl", -1, 10)
    # A huge (sparse) file costs one bounded read.
    with open(Path(sb.workdir) / "huge.jsonl", "wb") as f:
        f.truncate(8 * 1024**3)
    assert backend.read_range(sb, "huge.jsonl", 4 * 1024**3, 65536) == b"\0" * 65536
    backend.terminate(sb)
    with pytest.raises(SandboxGone):
        backend.read_range(sb, "transcript.jsonl", 0, 10)


def test_links_fifos_and_directories_in_the_files_place_are_refused(backend: LocalSandboxBackend,
                                                                     tmp_path: Path) -> None:
    sb = backend.create(run_id="r1", task_id="t2", attempt=1, env={})
    work = Path(sb.workdir)
    secret = tmp_path / "orchestrator.env"
    secret.write_text("LLM_API_KEY=sk-never-read")
    (work / "inside.jsonl").write_text("inside\n")
    os.symlink(secret, work / "out.jsonl")  # a link out of the sandbox
    os.symlink("inside.jsonl", work / "in.jsonl")  # even a link to a file inside
    os.mkfifo(work / "fifo.jsonl")  # nobody writes: opening it for reading would block
    (work / "dir.jsonl").mkdir()
    (work / "sub").mkdir()
    (work / "sub" / "t.jsonl").write_text("x\n")
    os.symlink(tmp_path, work / "linkdir")  # a parent that is a link
    (tmp_path / "t.jsonl").write_text("outside\n")
    for name in ("out.jsonl", "in.jsonl", "fifo.jsonl", "dir.jsonl", "linkdir/t.jsonl", "inside.jsonl/x"):
        assert _bounded(lambda name=name: backend.read_range(sb, name, 0, 1000)) is None, name
    assert backend.read_range(sb, "sub/t.jsonl", 0, 10) == b"x\n"
    backend.terminate(sb)


@pytest.mark.bwrap
def test_what_a_sandboxed_agent_plants_in_place_of_its_transcript_is_refused(tmp_path: Path) -> None:
    backend = LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))
    sb = backend.create(run_id="r1", task_id="t3", attempt=1, env={})
    swaps = {
        "fifo": "rm -f transcript.jsonl; mkfifo transcript.jsonl",
        "link": "rm -f transcript.jsonl; ln -s /etc/passwd transcript.jsonl",
        "directory": "rm -f transcript.jsonl; mkdir transcript.jsonl",
    }
    res = backend.exec(sb, ["sh", "-c", "printf '{\"kind\": \"note\"}\\n' > transcript.jsonl"], timeout_s=30)
    assert res.exit_code == 0, res.stderr
    assert backend.read_range(sb, "transcript.jsonl", 0, 100) == b'{"kind": "note"}\n'
    for what, script in swaps.items():
        res = backend.exec(sb, ["sh", "-c", f"rmdir transcript.jsonl 2>/dev/null; {script}"], timeout_s=30)
        assert res.exit_code == 0, (what, res.stderr)
        started = time.monotonic()
        assert _bounded(lambda: backend.read_range(sb, "transcript.jsonl", 0, 100)) is None, what
        assert time.monotonic() - started < 2, what
    backend.terminate(sb)
