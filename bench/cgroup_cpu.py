"""CPU-seconds of a whole process tree from a cpuacct cgroup (v1), when the machine lets a bench make one.

getrusage misses what bubblewrap's PID namespace reaps itself (most of a sandbox: the runner, git, node),
so the benches that run sandboxes measure with a cgroup: every process forked inside a group stays in it
however it is reaped. Child groups split the total by supervised process (cpuacct is hierarchical: a
group's usage includes its children's).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE = Path("/sys/fs/cgroup/cpuacct")


class CpuGroup:
    """A cpuacct group; the top one holds this process (and so what it starts from now on)."""

    def __init__(self, path: Path | None = None) -> None:
        self.children: dict[str, CpuGroup] = {}
        if path is not None:
            self.path: Path | None = path
            return
        self.path = BASE / f"agentswarm-bench-{os.getpid()}"
        try:
            self.path.mkdir()
            (self.path / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            self.path = None

    def usage_s(self) -> float | None:
        """CPU-seconds used by every process ever in the group and its child groups."""
        try:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9 if self.path else None
        except OSError:
            return None

    def adopt(self, name: str, pid: int) -> None:
        """Move `pid` and its descendants into the child group `name`; what they fork later stays there."""
        if self.path is None:
            return
        child = self.children.get(name)
        if child is None:
            path = self.path / name.replace(":", "-").replace("/", "-")
            try:
                path.mkdir(exist_ok=True)
            except OSError:
                return
            child = self.children[name] = CpuGroup(path)
        for p in [pid, *descendants(pid)]:
            try:
                (child.path / "cgroup.procs").write_text(str(p))  # type: ignore[operator]
            except OSError:
                pass  # gone already

    def by_child(self) -> dict[str, float]:
        """Each child group's CPU-seconds, and what no child holds (processes started before `adopt`)."""
        out = {name: round(g.usage_s() or 0.0, 2) for name, g in self.children.items()}
        total = self.usage_s()
        if total is not None and out:
            out["unattributed"] = round(total - sum(out.values()), 2)
        return out

    def release(self) -> None:
        """Move this process back to the root group and remove the (empty) groups."""
        if self.path is None:
            return
        try:
            (BASE / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            return
        for child in self.children.values():
            _remove(child.path)
        _remove(self.path)


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid, from /proc."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _remove(path: Path | None) -> None:
    """Remove a group once its processes have exited (the kernel refuses while any remain)."""
    if path is None:
        return
    for p in (path / "cgroup.procs").read_text().split() if (path / "cgroup.procs").exists() else []:
        try:
            (BASE / "cgroup.procs").write_text(p)
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        pass
