"""Find and kill a local sandbox's processes by the marker in their environment (Linux /proc)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MARKER = "AGENTSWARM_SANDBOX"
_PROC = Path("/proc")


def _marker_of(pid: int) -> str | None:
    try:
        raw = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
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
