"""Find and kill a local sandbox's processes by the marker in their environment (Linux /proc)."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

MARKER = "AGENTSWARM_SANDBOX"
_PROC = Path("/proc")


_PF_KTHREAD = 0x00200000  # include/linux/sched.h: the flag of a kernel thread (field 9 of stat)


def _environ_of(pid: int) -> bytes | None:
    """The process's environment block. A process in the middle of execve() reads as empty for a moment
    (its new memory has no environment yet), so an empty read of a process that is not a kernel thread
    is read again, after pauses of random length so that a process exec'ing in a loop cannot stay in
    step with the reads: otherwise a sandbox's process caught exec'ing would look unmarked and escape.
    (The marker finds leftovers; it is not the boundary: a process may exec itself with another
    environment. Under bubblewrap the PID namespace and --die-with-parent are.)"""
    raw = b""
    for attempt in range(8):
        if attempt:
            time.sleep(random.uniform(0.0005, 0.004))
        try:
            raw = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            return None
        if raw or _is_kernel_thread(pid):
            return raw
    return raw


def _is_kernel_thread(pid: int) -> bool:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return True  # gone: nothing to wait for
    return bool(int(stat[stat.rindex(")") + 2 :].split()[6]) & _PF_KTHREAD)


def _marker_of(pid: int) -> str | None:
    raw = _environ_of(pid)
    if raw is None:
        return None
    prefix = MARKER.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("utf-8", "replace")
    return None


def _pgid_of(pid: int) -> int | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Field 5 is the process group; the command name (field 2) may contain spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie is dead already; its parent will reap it
        return None
    return int(fields[2])


def marked_processes(prefix: str) -> dict[str, list[int]]:
    """Live processes whose marker starts with `prefix`, grouped by marker value."""
    found: dict[str, list[int]] = {}
    me = os.getpid()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        marker = _marker_of(pid)
        if marker is not None and marker.startswith(prefix) and _pgid_of(pid) is not None:
            found.setdefault(marker, []).append(pid)
    return found


def kill_marked(marker: str, *, attempts: int = 40, pause_s: float = 0.05) -> int:
    """SIGKILL every process carrying exactly `marker`, and their process groups, until none is left."""
    killed = 0
    own_group = os.getpgrp()
    for _ in range(attempts):
        pids = marked_processes(marker).get(marker, [])
        if not pids:
            return killed
        for pid in pids:
            pgid = _pgid_of(pid)
            if pgid is not None and pgid > 1 and pgid != own_group:
                kill_group(pgid)
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(pause_s)
    return killed


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; a group already gone is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
