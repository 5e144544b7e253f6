"""Isolating a local sandbox with bubblewrap: its own user, PID, IPC, UTS and network namespaces.

What a sandboxed process gets (and nothing else):
- the system read-only (/usr, /etc and the merged-/usr links), the Python that runs the runner
  and the agentswarm package and prompts, read-only, at their own paths;
- its sandbox's work, home and tmp directories read-write, a fresh /tmp, /dev and /proc (its own
  PID namespace: no other process of the machine is visible, so no parent's /proc/<pid>/environ);
- the extra paths the orchestrator binds for it: the hub's objects read-only (its clone borrows
  them) and the directory of its LLM gate's socket (or, for the install, of its registry proxy's);
- no network at all (a new network namespace has only loopback): Postgres, Redis and every host
  are unreachable; the model is reached through the gate's socket;
- an environment made from scratch (`--clearenv`);
- when the orchestrator runs as root, an unprivileged uid (`SANDBOX_UID`) with no capabilities and
  no_new_privs, so even a file it can see is read and written with nobody's rights.
Killing bwrap (or its process group) ends everything inside: the namespace's init dies with it.

This is a container-style boundary of the kernel's namespaces, not a virtual machine: a kernel
bug can still cross it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from agentswarm.sandbox.base import SandboxError

ISOLATIONS = ("bwrap", "none")
_SYSTEM_RO = ("/usr", "/etc")
_MERGED_USR = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`)"


@functools.lru_cache(maxsize=8)
def _tool(name: str) -> str | None:
    return shutil.which(name)


def _namespaces_and_user(uid: int, gid: int) -> tuple[list[str], list[str]]:
    """bwrap's namespace flags, and the command that becomes uid:gid inside (root only).

    As root, bwrap makes the namespaces with its own privileges (it can then bind what only root
    may read, such as an interpreter under /root) and `setpriv` inside drops to uid:gid with every
    capability gone and no way back (no_new_privs). As another user, a user namespace does it.
    """
    if os.geteuid() != 0:
        return ["--unshare-all"], []
    setpriv = _tool("setpriv")
    if not setpriv:
        raise IsolationUnavailable("setpriv (util-linux) is missing: cannot drop sandboxes to SANDBOX_UID")
    flags = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    drop = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--bounding-set=-all",
            "--inh-caps=-all", "--no-new-privs", "--"]
    return flags, drop


class IsolationUnavailable(SandboxError):
    """bubblewrap cannot isolate sandboxes on this machine; the message says why and what to do."""


@functools.lru_cache(maxsize=4)
def check_bwrap(uid: int, gid: int) -> None:
    """Raise IsolationUnavailable unless bwrap can create every namespace here (checked once per process)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise IsolationUnavailable(f"bwrap is not installed: {INSTALL_HINT}, or set SANDBOX_ISOLATION=none")
    flags, drop = _namespaces_and_user(uid, gid)
    argv = [bwrap, *flags, "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", *drop,
            "true"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": os.defpath})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise IsolationUnavailable(f"bwrap does not start: {exc}") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise IsolationUnavailable(f"bwrap cannot create namespaces here ({why}): user namespaces may be "
                                   "disabled (sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces); "
                                   "enable them, or set SANDBOX_ISOLATION=none to run agents unisolated")


@functools.lru_cache(maxsize=4)
def runtime_paths(python: str) -> list[str]:
    """What the runner needs read-only: the interpreter (venv and base), the package and the prompts."""
    import agentswarm

    package = Path(agentswarm.__file__).resolve().parent
    paths = {sys.prefix, sys.base_prefix, str(Path(python).parent.parent), str(package),
             str(package.parent / "prompts")}
    try:  # a venv's python is a link into the base interpreter's tree
        paths.add(str(Path(os.path.realpath(python)).parent.parent))
    except OSError:
        pass
    return sorted(p for p in paths if Path(p).exists())


def _parents(paths: list[str]) -> list[str]:
    """Every directory above the given paths that the sandbox must create, outermost first."""
    found: set[str] = set()
    for path in paths:
        for parent in Path(path).parents:
            top = str(parent)
            if top != "/" and top not in ("/tmp", *_SYSTEM_RO) and not top.startswith(("/usr/", "/etc/")):
                found.add(top)
    return sorted(found, key=lambda p: (p.count("/"), p))


def wrap(argv: list[str], *, workdir: str, home: str, tmp: str, env: Mapping[str, str], uid: int, gid: int,
         python: str, readonly: Iterable[str] = (), writable: Iterable[str] = ()) -> list[str]:
    """The command that runs argv inside a fresh bubblewrap sandbox (see the module's docstring).

    Always its own network namespace: even the dependency install reaches its registry only through
    a Unix socket the orchestrator binds in (sandbox/registry_proxy.py), never the host's network.
    """
    bwrap = _tool("bwrap") or "bwrap"
    flags, drop = _namespaces_and_user(uid, gid)
    args = [bwrap, *flags, "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    for path in _SYSTEM_RO:
        args += ["--ro-bind", path, path]
    for path in _MERGED_USR:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    readonly, writable = [*runtime_paths(python), *readonly], [workdir, home, tmp, *writable]
    for parent in _parents([*readonly, *writable]):  # traversable by the sandbox's user, whatever the host's modes
        args += ["--perms", "0755", "--dir", parent]
    for path in readonly:
        args += ["--ro-bind", path, path]
    for path in writable:
        args += ["--bind", path, path]
    return [*args, "--chdir", workdir, "--", *drop, *argv]
