"""Live progress: a running attempt's transcript copied from its sandbox into Postgres as the agent works.

Every heartbeat interval a thread of its own (a slow remote read never delays a heartbeat) reads the new
bytes of the sandbox's transcript.jsonl, at most READ_BYTES a beat, and stores its whole lines as one
live_steps row: scrubbed of every orchestrator secret, cleaned for Postgres, and capped per attempt by
LIVE_TRANSCRIPT_CAP_BYTES (then one `truncated` line and nothing more). A partial last line waits for the
next beat; a single line longer than a beat's read is left out (a line cut in two could hide a secret's
first half), replaced by a note, and the tail moves on. A last read when the attempt ends (before its
handoff is stored) keeps the steps of short attempts. The file is the agent's: whatever it puts there, a
failed read or insert is logged and never fails the task.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from agentswarm.config import Settings
from agentswarm.db.session import session_scope
from agentswarm.db.text import orchestrator_secrets
from agentswarm.lifecycle.progress import add_live_step
from agentswarm.sandbox import SandboxBackend, SandboxHandle
from agentswarm.scrubbing import scrub_clip
from agentswarm.work.model_gate import LLMGate

log = logging.getLogger(__name__)

TRANSCRIPT_NAME = "transcript.jsonl"  # written by the runner beside result.json, one flushed line per event
READ_BYTES = 64 * 1024
FINAL_READS = 64  # reads at most in the last catch-up (the cap ends it sooner)
_KIND = re.compile(rb'"kind": ?"([A-Za-z_]{1,40})"')


@dataclass
class Piece:
    """New whole lines of the transcript: `offset` is how far the file has been read after them."""

    offset: int
    lines: str
    events: int


def _line(kind: str, **data: object) -> str:
    return json.dumps({"t": round(time.time(), 3), "kind": kind, **data}) + "\n"


class TranscriptTail:
    """Where one attempt's transcript has been read to, and what of it is kept: whole lines, scrubbed, capped."""

    def __init__(self, cap_bytes: int, *, secrets: list[str], read_bytes: int = READ_BYTES) -> None:
        self.cap_bytes = cap_bytes
        self.read_bytes = read_bytes
        self.secrets = secrets
        self.offset = 0  # bytes of the file consumed (kept or left out)
        self.kept = 0  # bytes of lines kept
        self.skipping = False  # inside an overlong line: drop bytes up to its newline
        self.done = cap_bytes <= 0

    def feed(self, chunk: bytes) -> Piece | None:
        """Take the bytes read at `offset`; the new lines to store, or None while there are none."""
        if self.done or not chunk:
            return None
        if self.skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                self.offset += len(chunk)
                return None
            self.skipping = False
            self.offset += newline + 1
            chunk = chunk[newline + 1:]
        end = chunk.rfind(b"\n")
        if end >= 0:
            text = chunk[: end + 1].decode("utf-8", "replace")
            self.offset += end + 1
        elif len(chunk) >= self.read_bytes:  # one line longer than a read: leave it out and move on
            kind = _KIND.search(chunk[:200])
            text = _line("note", event="line_cut", cut_kind=kind.group(1).decode() if kind else None,
                         note=f"a transcript line longer than {self.read_bytes} bytes was left out")
            self.offset += len(chunk)
            self.skipping = True
        else:
            return None  # a partial line: it waits for the next beat
        return self._kept(text)

    def _kept(self, text: str) -> Piece | None:
        clean = scrub_clip(text, self.secrets) or ""  # a secret cannot span lines: JSON escapes newlines
        lines = [line + "\n" for line in clean.split("\n") if line.strip()]
        kept: list[str] = []
        for line in lines:
            size = len(line.encode())
            if self.kept + size > self.cap_bytes:
                kept.append(_line("truncated", note=f"live transcript reached its {self.cap_bytes}-byte cap; "
                                  "the whole transcript comes with the handoff"))
                self.done = True
                break
            kept.append(line)
            self.kept += size
        return Piece(self.offset, "".join(kept), len(kept)) if kept else None


class LiveProgress:
    """Copies one attempt's transcript into live_steps every `interval_s`, from a thread of its own."""

    def __init__(self, backend: SandboxBackend, sb: SandboxHandle, task_id: str, attempt: int, *,
                 interval_s: float, cap_bytes: int, secrets: list[str], gate: LLMGate | None = None,
                 read_bytes: int = READ_BYTES) -> None:
        self.backend, self.sb, self.task_id, self.attempt = backend, sb, task_id, attempt
        self.interval_s = interval_s
        self.gate = gate
        self.tail = TranscriptTail(cap_bytes, secrets=secrets, read_bytes=read_bytes)
        self.rows = 0
        self._lock = threading.Lock()  # one beat at a time: the thread's, or the last one
        self._stop = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Read what is new and store its lines; True when a row was written. Never raises."""
        with self._lock:
            tail = self.tail
            if self._closed or tail.done:
                return False
            before = (tail.offset, tail.kept, tail.skipping, tail.done)
            try:
                chunk = self.backend.read_range(self.sb, TRANSCRIPT_NAME, tail.offset, tail.read_bytes)
                piece = tail.feed(chunk or b"")
                if piece is None or self._closed:
                    return False
                with session_scope() as db:
                    add_live_step(db, self.task_id, self.attempt, offset=piece.offset, lines=piece.lines,
                                  events=piece.events, gate_calls=len(self.gate.calls) if self.gate else 0)
                self.rows += 1
                return True
            except Exception:  # the sandbox or Postgres failed this beat: the next one tries again; the task goes on
                tail.offset, tail.kept, tail.skipping, tail.done = before
                log.warning("task %s: live transcript not read or not stored", self.task_id, exc_info=True)
                return False

    def start(self) -> LiveProgress:
        """Begin beating in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name=f"live-{self.task_id}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def close(self, *, final: bool = True, wait_s: float = 10.0) -> None:
        """Stop the thread and (final) catch up with what the attempt wrote last; nothing is stored after.

        A thread still stuck in a read after `wait_s` is left to end on its own: it sees the tail closed
        and stores nothing (the last catch-up is skipped then, not run beside it).
        """
        self._stop.set()
        stuck = False
        if self._thread is not None:
            self._thread.join(wait_s)
            stuck = self._thread.is_alive()
        if final and not stuck:
            for _ in range(FINAL_READS):
                before = self.tail.offset
                if not self.beat() and self.tail.offset == before:
                    break
        self._closed = True


@contextmanager
def live_progress(backend: SandboxBackend, sb: SandboxHandle, task_id: str, attempt: int, settings: Settings,
                  gate: LLMGate | None = None) -> Iterator[LiveProgress]:
    """Copy the attempt's transcript to Postgres while the block runs, and once more when it ends."""
    progress = LiveProgress(backend, sb, task_id, attempt, interval_s=settings.heartbeat_interval_s,
                            cap_bytes=settings.live_transcript_cap_bytes, secrets=orchestrator_secrets(settings),
                            gate=gate)
    if progress.tail.done:  # LIVE_TRANSCRIPT_CAP_BYTES=0: off
        yield progress
        return
    progress.start()
    try:
        yield progress
    finally:
        progress.close()
