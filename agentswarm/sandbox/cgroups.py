"""A control group per local sandbox: its processes, memory and CPU bounded together, whatever its uid.

Every sandbox runs as the same unprivileged uid, so RLIMIT_NPROC (which counts a uid's processes
machine-wide) cannot tell one sandbox from another: a fork bomb in one would stop forks in all. A
group per sandbox can: `pids.max`, the memory limit and the CPU quota bind that sandbox only.

Invariants:
- Each controller is taken where this machine offers it to us: from the unified hierarchy (cgroup v2)
  when it is enabled there, else from its own v1 hierarchy; the groups live under this process's own
  group (on v2, when that group holds processes and so cannot hand controllers down, under the
  hierarchy's root), in `agentswarm-<tag>` (the tag names the sandbox root, so two swarms on a host never share
  one), one group per sandbox named after its id. What is missing is named in `reason`, never silent.
- The swarm's parent pids group bounds all its sandboxes together (the host's pid space is shared),
  as RLIMIT_NPROC did per uid, but for this swarm only: not for other swarms running as the same uid.
- A sandbox's command joins its groups before anything of the sandbox runs: a small shell (root,
  outside the sandbox) writes its own pid to each group's `cgroup.procs`, then execs the command,
  so every process the command starts is counted from its first fork.
- Releasing kills every process of the groups and removes them, and their `agentswarm-<tag>` parent
  once it is empty (a later sandbox makes it again); an absent group is fine, so the reaper's
  terminate of a half-made or half-removed sandbox finishes the job.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CONTROLLERS = ("pids", "memory", "cpu")
CPU_PERIOD_US = 100_000
_JOIN = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Want:
    """The limits of one sandbox (and the pids of all of this swarm's together); None: not limited here."""

    pids: int | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    total_pids: int | None = None

    def of(self, controller: str) -> int | float | None:
        return {"pids": self.pids, "memory": self.memory_mb, "cpu": self.cpus}[controller]


@dataclass(frozen=True)
class Cgroups:
    """Where this machine lets us put sandbox groups: controller -> (version, base directory)."""

    bases: dict[str, tuple[int, Path]] = field(default_factory=dict)
    reason: str = ""

    def describe(self) -> str:
        if not self.bases:
            return f"no cgroup per sandbox ({self.reason})"
        have = ", ".join(f"{c} (v{v})" for c, (v, _) in self.bases.items())
        return f"cgroup per sandbox: {have}" + (f"; {self.reason}" if self.reason else "")

    def dirs(self, sid: str) -> list[Path]:
        """The sandbox's group directories, one per hierarchy used."""
        name = sid.replace("/", "@")
        return sorted({base / name for _v, base in self.bases.values()})

    def make(self, sid: str, want: Want) -> list[str]:
        """Create the sandbox's groups with their limits; their paths (for meta.json)."""
        name = sid.replace("/", "@")
        made: dict[Path, None] = {}
        for controller, (version, base) in self.bases.items():
            value = want.of(controller)
            group = base / name
            _make_group(group, version)
            made[group] = None
            if value is not None:
                for file, text in _settings(controller, version, value):
                    (group / file).write_text(text)
            if controller == "pids" and want.total_pids is not None:  # the parent stays while the group is in it
                (base / "pids.max").write_text(str(want.total_pids))
        return [str(p) for p in made]

    def join(self, groups: Iterable[str], cmd: list[str]) -> list[str]:
        """cmd behind the shell that moves itself into each group, then execs it (exit 125 if it cannot)."""
        procs = [str(Path(g) / "cgroup.procs") for g in groups]
        return ["/bin/sh", "-c", _JOIN, "agentswarm-cgroup", *procs, "--", *cmd] if procs else cmd


def release(groups: Iterable[str], *, wait_s: float = 10.0) -> None:
    """Kill every process in the groups and remove them; groups already gone are fine."""
    for group in map(Path, groups):
        if not group.name or "@" not in group.name:  # only ever a sandbox's own group
            continue
        deadline = time.monotonic() + wait_s
        while group.is_dir():
            _kill_all(group)
            try:
                group.rmdir()
            except FileNotFoundError:
                break
            except OSError:  # EBUSY: a process not yet reaped, or one forked between the read and the kill
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        _rmdir(group.parent)  # only if no other sandbox of this swarm has a group in it now


def detect(root: Path) -> Cgroups:
    """The controllers this process may delegate to sandbox groups, each from v2 if enabled there, else v1."""
    if os.geteuid() != 0:
        return Cgroups(reason="not root: only root may create cgroups here")
    tag = "agentswarm-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    mounts, own = _mounts(), _own_groups()
    bases: dict[str, tuple[int, Path]] = {}
    missing: list[str] = []
    v2, v2_why = _v2_base(mounts.get(""), own.get(""), tag)
    notes = []
    if v2 is None and v2_why and own.get("", "/") != "/":  # our group holds processes: the hierarchy's root may
        v2, _ = _v2_base(mounts.get(""), "/", tag)
        notes = [f"v2 groups under the hierarchy's root ({v2_why.split(':')[0]})"] if v2 is not None else []
    for controller in CONTROLLERS:
        if v2 is not None and controller in _read(v2 / "cgroup.controllers").split():
            bases[controller] = (2, v2)
            continue
        base = _v1_base(mounts.get(controller), own.get(controller), tag)
        if base is not None:
            bases[controller] = (1, base)
        else:
            missing.append(controller)
    if missing:
        notes.append(f"no writable {'/'.join(missing)} controller: {v2_why or 'not enabled in cgroup v2'}, "
                     "no v1 hierarchy")
    return Cgroups(bases=bases, reason="; ".join(notes))


def _make_group(group: Path, version: int) -> None:
    """mkdir the group, its parent too if the last sandbox's release removed it meanwhile."""
    for _ in range(5):
        try:
            if not group.parent.is_dir():
                group.parent.mkdir(exist_ok=True)
                if version == 2:  # a v2 parent hands its controllers down only when told to
                    offered = _read(group.parent / "cgroup.controllers").split()
                    (group.parent / "cgroup.subtree_control").write_text(
                        " ".join(f"+{c}" for c in CONTROLLERS if c in offered))
            group.mkdir(exist_ok=True)
            return
        except FileNotFoundError:  # the parent went between the two mkdirs: once more
            continue
    group.mkdir(exist_ok=True)


def _settings(controller: str, version: int, value: float) -> list[tuple[str, str]]:
    if controller == "pids":
        return [("pids.max", str(int(value)))]
    if controller == "memory":
        size = str(int(value) * 1024 * 1024)
        return [("memory.max", size)] if version == 2 else [("memory.limit_in_bytes", size)]
    quota = str(max(1000, int(value * CPU_PERIOD_US)))
    if version == 2:
        return [("cpu.max", f"{quota} {CPU_PERIOD_US}")]
    return [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", quota)]


def _kill_all(group: Path) -> None:
    kill = group / "cgroup.kill"  # v2 (Linux 5.14+): the whole group at once, forks in flight included
    if kill.exists():
        try:
            kill.write_text("1")
            return
        except OSError:
            pass
    for _ in range(200):  # v1: kill what is listed until nothing is (pids.max bounds a fork bomb's refill)
        pids = [int(p) for p in _read(group / "cgroup.procs").split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)


def _v2_base(mount: Path | None, own: str | None, tag: str) -> tuple[Path | None, str]:
    """Our sandbox parent in the unified hierarchy, with every controller our own group hands down
    enabled; else None and why."""
    if mount is None or own is None:
        return None, "no cgroup v2"
    parent = mount / own.lstrip("/")
    offered = _read(parent / "cgroup.controllers").split()
    wanted = [c for c in CONTROLLERS if c in offered]
    if not wanted:
        return None, ""
    if not os.access(parent, os.W_OK):
        return None, f"cgroup v2 group {own} is not writable (not delegated to us)"
    try:
        if set(wanted) - set(_read(parent / "cgroup.subtree_control").split()):
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        base = parent / tag
        base.mkdir(exist_ok=True)
        (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
    except OSError as exc:  # EBUSY: v2 lets no group (but the root) hold processes and hand controllers down
        return None, (f"cgroup v2 group {own} cannot hand {'/'.join(wanted)} down ({exc.strerror}): run the "
                      "orchestrator in a leaf of a delegated subtree, e.g. systemd's Delegate=yes")
    _rmdir(base)  # made again with the first sandbox (a probe only: no empty parent left behind)
    return base, ""


def _v1_base(mount: Path | None, own: str | None, tag: str) -> Path | None:
    if mount is None or own is None:
        return None
    base = mount / own.lstrip("/") / tag
    try:
        base.mkdir(exist_ok=True)
    except OSError:
        return None
    usable = os.access(base / "cgroup.procs", os.W_OK)
    _rmdir(base)  # made again with the first sandbox (a probe only: no empty parent left behind)
    return base if usable else None


def _rmdir(group: Path) -> None:
    try:
        group.rmdir()
    except OSError:  # in use by another sandbox of this swarm (or gone): fine
        pass


def _mounts() -> dict[str, Path]:
    """Mount point of each v1 controller's hierarchy, and of the unified one under ''."""
    found: dict[str, Path] = {}
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = (right.split() + ["", "", ""])[:3]
        point = Path(_unescape(left.split()[4]))
        if fstype == "cgroup2":
            found.setdefault("", point)
        elif fstype == "cgroup":
            for opt in options.split(","):
                if opt in CONTROLLERS:
                    found.setdefault(opt, point)
    return found


def _own_groups() -> dict[str, str]:
    """This process's group path per v1 controller, and in the unified hierarchy under ''."""
    found: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _hid, names, path = (line.split(":", 2) + ["", ""])[:3]
        for name in names.split(",") if names else [""]:
            found[name] = path
    return found


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
