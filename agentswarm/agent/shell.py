"""Run a command in its own process group with a time limit, keeping only the head and tail of its output.

Standard library only. Used by the `run` tool and by the external agent drivers.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

SECRET_ENV = ("LLM_API_KEY", "GIT_TOKEN", "OPENAI_API_KEY", "GIT_ASKPASS", "AGENTSWARM_DASHBOARD_TOKEN",
              "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "HUB_SERVE_TOKEN", "GATE_HUB_TOKEN")
DEFAULT_CAP = 32 * 1024
_CHUNK = 64 * 1024
_EXIT_GRACE_S = 1.0  # after the command exits, how long a background child may keep the pipe open
_KILL_GRACE_S = 2.0


@dataclass
class ShellResult:
    """What one command did; `output` is stdout and stderr interleaved, capped."""

    exit_code: int | None
    output: str
    timed_out: bool
    duration_s: float
    total_bytes: int
    dropped_bytes: int


class HeadTail:
    """Keeps the first and last `cap/2` bytes of a stream and counts the bytes it drops."""

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        self.cap = max(2, cap)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self.dropped = 0

    def feed(self, data: bytes | str) -> None:
        """Add a chunk (text is encoded as UTF-8)."""
        data = data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)
        self.total += len(data)
        room = self.cap // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        keep = self.cap - self.cap // 2
        if len(self.tail) > keep:
            excess = len(self.tail) - keep
            self.dropped += excess
            del self.tail[:excess]

    def text(self) -> str:
        """The kept bytes as text, with a marker where the middle was dropped."""
        if not self.dropped:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace")
        marker = f"\n[... {self.dropped} bytes of output truncated ...]\n".encode()
        return (bytes(self.head) + marker + bytes(self.tail)).decode("utf-8", "replace")


def clean_env(extra: Mapping[str, str] | None = None, *, drop: tuple[str, ...] = SECRET_ENV) -> dict[str, str]:
    """The current environment without the secrets, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra or {})
    return env


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            # The leader is gone but its children may linger in the group: make sure they go too.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return


def run_capped(
    command: str | list[str],
    *,
    cwd: str,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cap_bytes: int = DEFAULT_CAP,
    stdin_data: bytes | None = None,
    buf: HeadTail | None = None,
    watch: Callable[[bytes], None] | None = None,
) -> ShellResult:
    """Run `command` (a shell string or an argv) and return its capped output; the group is killed at the limit.

    Pass `buf` to keep the output seen so far when an exception (a deadline, a signal) cuts the wait short.
    `watch` sees every chunk of output as it comes, uncapped, and b"" whenever a short wait passes without any
    (so it may poll files the command writes); it should not raise (what it raises kills the command).
    """
    started = time.monotonic()
    deadline = started + max(0.0, timeout_s)
    buf = buf if buf is not None else HeadTail(cap_bytes)
    # A pipe rather than a temp file: memory stays at `cap_bytes` and a runaway `yes` cannot fill the disk.
    proc = subprocess.Popen(
        command, shell=isinstance(command, str), cwd=cwd, env=dict(env) if env is not None else clean_env(),
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    timed_out = False
    try:
        if stdin_data is not None and proc.stdin is not None:
            try:
                proc.stdin.write(stdin_data)
                proc.stdin.close()
            except BrokenPipeError:
                pass
        timed_out = _pump(proc, buf, deadline, watch)
    finally:
        if proc.poll() is None or timed_out:
            kill_group(proc)
        else:
            _reap_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()
    return ShellResult(
        exit_code=None if timed_out else proc.returncode, output=buf.text(), timed_out=timed_out,
        duration_s=round(time.monotonic() - started, 3), total_bytes=buf.total, dropped_bytes=buf.dropped,
    )


def _pump(proc: subprocess.Popen, buf: HeadTail, deadline: float,
          watch: Callable[[bytes], None] | None = None) -> bool:
    """Copy the pipe into `buf` (and `watch`) until EOF; True if the deadline passed first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    exited_at: float | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if now >= deadline:
                return True
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _EXIT_GRACE_S:
                return False  # a background child holds the pipe open; the group is reaped by the caller
            wait = min(deadline - now, 0.2)
            ready = sel.select(wait)
            if not ready and watch is not None:
                watch(b"")
            for _key, _ev in ready:
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    try:
                        proc.wait(timeout=max(0.01, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        return True
                    return False
                buf.feed(chunk)
                if watch is not None:
                    watch(chunk)


def _reap_group(proc: subprocess.Popen) -> None:
    # Children the command left running in the background die with it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
