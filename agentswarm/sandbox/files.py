"""File helpers of the local backend: atomic writes, capped and ranged reads, handing trees over, forced removal."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def chown_tree(top: Path, uid: int) -> None:
    """Give a directory tree to uid (links themselves, never what they point at)."""
    for dirpath, dirnames, filenames in os.walk(top):
        os.lchown(dirpath, uid, uid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:  # e.g. ENOSPC at the sandbox's quota: no partial file left to fill it
        tmp.unlink(missing_ok=True)
        raise


def read_capped(path: Path, cap: int) -> str:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= cap:
                return f.read().decode("utf-8", "replace")
            head = f.read(cap // 2)
            f.seek(size - (cap - cap // 2))
            tail = f.read()
    except FileNotFoundError:
        return ""
    marker = f"\n[... {size - len(head) - len(tail)} bytes truncated ...]\n".encode()
    return (head + marker + tail).decode("utf-8", "replace")


def read_range(root: Path, rel: str, offset: int, limit: int) -> bytes | None:
    """At most `limit` bytes from `offset` of the regular file `rel` under `root`; None if absent or not one.

    The file is written by the sandbox's user and may be swapped at any moment: every component is opened
    without following links and the file without blocking, so a link, FIFO or directory put in its place
    (or in a parent's) is refused, never followed or waited on, and a huge file costs one bounded read.
    """
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or rel.startswith("/") or offset < 0 or limit < 0:
        raise ValueError(f"bad ranged read: {rel!r} from {offset}, {limit} bytes")
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            parent, fd = fd, os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(parent)
        ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=fd)
    except OSError:  # absent, a link (ELOOP), a parent that is not a directory, not readable
        return None
    finally:
        os.close(fd)
    try:
        if not stat.S_ISREG(os.fstat(ffd).st_mode):
            return None
        chunks: list[bytes] = []
        got = 0
        while got < limit:
            chunk = os.pread(ffd, limit - got, offset + got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(ffd)


def force_remove(func: Callable[..., Any], path: str, _exc_info: object) -> None:
    """rmtree error handler: make a read-only entry (and its directory) writable and retry once."""
    try:
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
        func(path)
    except OSError:
        pass
