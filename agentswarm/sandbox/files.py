"""File helpers of the local backend: atomic writes, capped reads, handing trees over, forced removal."""

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
    tmp.write_bytes(data)
    os.replace(tmp, path)


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


def force_remove(func: Callable[..., Any], path: str, _exc_info: object) -> None:
    """rmtree error handler: make a read-only entry (and its directory) writable and retry once."""
    try:
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
        func(path)
    except OSError:
        pass
