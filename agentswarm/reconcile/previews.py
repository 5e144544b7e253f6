"""Previews of green mains: the built game (`dist/`) copied out of the check sandbox, one directory per sha.

Layout, beside the hub (orchestrator-owned, never bound into a sandbox):
`previews/<sha>/dist/...` (the files as built) and `previews/<sha>/preview.json` (the manifest: sha, time,
file count, bytes). A directory with a manifest is a kept preview; the newest `keep` are kept.

The sandbox is untrusted, and so is its dist/: `stage_dist` walks it with every component opened without
following links (a link, FIFO or device anywhere refuses the whole preview), admits only plain names,
caps the depth, the file count and the bytes (a dist over a cap is refused, not cut), and copies into a
staging directory of ours; `keep_preview` renames that into place, so a reader never sees half a preview.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentswarm.errors import SwarmError
from agentswarm.sandbox.files import write_atomic

__all__ = ["MANIFEST", "PreviewRefused", "discard", "keep_preview", "list_previews", "preview_files",
           "previews_root", "stage_dist"]

MANIFEST = "preview.json"
DIST = "dist"
MAX_FILES = 2000
MAX_DEPTH = 12
NAME = re.compile(r"[A-Za-z0-9_@+~-][A-Za-z0-9._@+~-]{0,127}")  # a plain file name: no dot first, no slash
SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
STAGING = ".staging-"
STALE_S = 3600


class PreviewRefused(SwarmError):
    """The sandbox's dist/ cannot be kept: a link, an odd name or file type, or over a cap."""


def previews_root(hub_path: Path) -> Path:
    """Previews of green mains, beside the hub (var/previews for the default var/hub.git)."""
    return hub_path.resolve().parent / "previews"


def preview_files(root: Path, sha: str) -> Path | None:
    """The kept dist/ of sha (None when none is kept, or the sha is not a full commit id)."""
    if not SHA.fullmatch(sha):
        return None
    top = root / sha
    if top.is_symlink() or not (top / MANIFEST).is_file() or (top / DIST).is_symlink():
        return None
    return top / DIST


def stage_dist(workdir: Path, rel: str, root: Path, *, max_bytes: int, max_files: int = MAX_FILES) -> Path:
    """Copy the directory `rel` under the sandbox's `workdir` into a new staging directory under root.

    Returns the staging directory (its `dist/` holds the copy); raises PreviewRefused, leaving nothing behind.
    """
    root.mkdir(parents=True, exist_ok=True)
    staged = root / f"{STAGING}{uuid.uuid4().hex}"
    staged.mkdir()
    budget = {"bytes": max_bytes, "files": max_files}
    try:
        fd = _open_dir_at(workdir, rel)
        try:
            _copy_dir(fd, staged / DIST, rel, budget, depth=0)
        finally:
            os.close(fd)
    except BaseException:
        discard(staged)
        raise
    return staged


def keep_preview(root: Path, sha: str, staged: Path, keep: int, at: datetime | None = None) -> dict[str, Any]:
    """Move a staged copy into place as sha's preview (replacing one kept before), then prune beyond `keep`."""
    if not SHA.fullmatch(sha):
        raise ValueError(f"not a full commit id: {sha!r}")
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the preview being saved), got {keep}")
    files = [p for p in (staged / DIST).rglob("*") if p.is_file()]
    manifest = {"sha": sha, "at": (at or datetime.now(UTC)).isoformat(), "files": len(files),
                "bytes": sum(p.stat().st_size for p in files)}
    write_atomic(staged / MANIFEST, json.dumps(manifest).encode())
    target = root / sha
    old = root / f"{STAGING}old-{uuid.uuid4().hex}"
    if target.exists():
        target.rename(old)
    staged.rename(target)
    discard(old)
    for gone in list_previews(root, None)[keep:]:
        discard(root / gone["sha"])
    for left in root.glob(f"{STAGING}*"):  # copies a killed reconciler left behind (a live one is minutes old)
        try:
            if left.stat().st_mtime < time.time() - STALE_S:
                discard(left)
        except FileNotFoundError:
            continue
    return manifest


def list_previews(root: Path, limit: int | None) -> list[dict[str, Any]]:
    """The kept previews' manifests, newest first (at most `limit`)."""
    found = []
    for top in root.iterdir() if root.is_dir() else ():
        if not SHA.fullmatch(top.name) or top.is_symlink():
            continue
        try:
            manifest = json.loads((top / MANIFEST).read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("sha") == top.name and isinstance(manifest.get("at"), str):
            found.append(manifest)
    found.sort(key=lambda m: m["at"], reverse=True)
    return found if limit is None else found[:max(0, limit)]


def discard(path: Path) -> None:
    """Remove a staging directory or a preview (nothing if absent)."""
    shutil.rmtree(path, ignore_errors=True)


def _open_dir_at(workdir: Path, rel: str) -> int:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"bad directory {rel!r}")
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            parent, fd = fd, os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(parent)
    except OSError as exc:
        os.close(fd)
        raise PreviewRefused(f"{rel} is not a directory of the checkout ({exc.strerror})") from None
    return fd


def _copy_dir(fd: int, dest: Path, shown: str, budget: dict[str, int], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise PreviewRefused(f"{shown} is nested deeper than {MAX_DEPTH} directories")
    dest.mkdir()
    for name in sorted(os.listdir(fd)):
        where = f"{shown}/{name}"
        if not NAME.fullmatch(name) or ".." in name:
            raise PreviewRefused(f"{where!r}: not a plain file name")
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            sub = _open(fd, name, where, os.O_DIRECTORY)
            try:
                _copy_dir(sub, dest / name, where, budget, depth + 1)
            finally:
                os.close(sub)
        elif stat.S_ISREG(mode):
            budget["files"] -= 1
            if budget["files"] < 0:
                raise PreviewRefused(f"{shown.split('/')[0]} has more files than the {MAX_FILES} a preview keeps")
            _copy_file(fd, name, dest / name, where, budget)
        else:  # a symbolic link, FIFO, socket or device: nothing a build writes
            raise PreviewRefused(f"{where} is {'a symbolic link' if stat.S_ISLNK(mode) else 'not a regular file'}")


def _open(fd: int, name: str, where: str, flags: int) -> int:
    try:  # O_NOFOLLOW: an entry swapped for a link since it was looked at is refused, not followed
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | flags, dir_fd=fd)
    except OSError as exc:
        raise PreviewRefused(f"{where} cannot be opened ({exc.strerror})") from None


def _copy_file(fd: int, name: str, dest: Path, where: str, budget: dict[str, int]) -> None:
    src = _open(fd, name, where, 0)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise PreviewRefused(f"{where} is not a regular file")
        with open(dest, "xb") as out:
            while chunk := os.read(src, 1 << 20):
                budget["bytes"] -= len(chunk)
                if budget["bytes"] < 0:
                    raise PreviewRefused(f"the build is larger than a preview may be ({where} passed the cap)")
                out.write(chunk)
    finally:
        os.close(src)
