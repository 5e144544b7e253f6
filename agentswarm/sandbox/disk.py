"""A disk quota per local sandbox: its writable places share one size-limited tmpfs.

Invariants:
- A sandbox made with a quota has a tmpfs of that size (and a proportional number of inodes) at
  `<sandbox>/.disk`, and its `work`, `home` and `tmp` are bind mounts of directories in it: together
  they hold at most the quota, and a write past it fails with ENOSPC. The layout seen by the
  orchestrator and by the sandbox is unchanged. `logs` (a command's stdout and stderr while it runs,
  each file capped by RLIMIT_FSIZE) stays outside, so a full sandbox still reports its errors.
- The mounts are made in the staging directory before it is renamed into place (a directory holding
  mounts may be renamed, a mount point itself may not), so a sandbox is never visible without them.
- Releasing unmounts everything under the sandbox's directory (found in /proc/self/mountinfo, the
  deepest first, detached), so the reaper's terminate of a half-made sandbox finishes the job and
  rmtree never walks into a mount.
- tmpfs lives in memory (and swap): a sandbox's files count in the machine's RAM, and in the sandbox's
  memory group when the sandbox wrote them. The quota bounds that too.
"""

from __future__ import annotations

import ctypes
import functools
import os
import tempfile
from pathlib import Path

SUBDIRS = ("work", "home", "tmp")
DISK = ".disk"
INODES_PER_MB = 256  # 4 KiB per file on average: node_modules trees are about 10 KiB
_MS_NOSUID, _MS_NODEV, _MS_BIND = 2, 4, 4096
_MNT_DETACH = 2


class DiskUnavailable(OSError):
    """A size-limited tmpfs cannot be mounted here (not root, or mount refused)."""


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: Path, fstype: str | None, flags: int, data: str | None) -> None:
    rc = _libc().mount(source.encode(), str(target).encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None)
    if rc != 0:
        errno = ctypes.get_errno()
        raise DiskUnavailable(errno, f"mount {fstype or 'bind'} on {target}: {os.strerror(errno)}")


def make(staging: Path, size_mb: int) -> None:
    """Mount the quota's tmpfs in `staging` and bind its subdirectories at work, home and tmp."""
    disk = staging / DISK
    disk.mkdir()
    options = f"size={size_mb}m,nr_inodes={max(4096, size_mb * INODES_PER_MB)},mode=0700"
    _mount("agentswarm-sandbox", disk, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    try:
        for sub in SUBDIRS:
            (disk / sub).mkdir()
            (staging / sub).mkdir(exist_ok=True)
            _mount(str(disk / sub), staging / sub, None, _MS_BIND, None)
    except OSError:
        release(staging)
        raise


def release(sbdir: Path) -> None:
    """Unmount every mount at or under sbdir (detached: a process still inside cannot hold it up)."""
    for point in mounts_under(sbdir):
        if _libc().umount2(str(point).encode(), _MNT_DETACH) != 0:
            errno = ctypes.get_errno()
            if errno not in (22, 2):  # EINVAL: not a mount (any more); ENOENT: gone
                raise OSError(errno, f"umount {point}: {os.strerror(errno)}")


def mounts_under(sbdir: Path) -> list[Path]:
    """Mount points at or under sbdir, the deepest (and latest) first."""
    top = str(sbdir)
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        point = _unescape(line.split()[4])
        if point == top or point.startswith(top + "/"):
            found.append(Path(point))
    return list(reversed(found))


def usable() -> str:
    """'' if a quota tmpfs can be mounted here, else why not (checked by mounting one)."""
    if os.geteuid() != 0:
        return "not root: only root may mount a size-limited tmpfs"
    probe = Path(tempfile.mkdtemp(prefix="agentswarm-disk-probe-"))
    try:
        _mount("agentswarm-probe", probe, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m")
    except DiskUnavailable as exc:
        return str(exc)
    finally:
        release(probe)
        probe.rmdir()
    return ""


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
