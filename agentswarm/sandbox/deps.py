"""The target's installed dependencies, shared read-only by every sandbox that runs its checks.

Installed once per lock file (a digest of the manifests at a commit), in a sandbox that holds no
secret and reaches only the npm registry, through a proxy the orchestrator runs (registry_proxy.py:
no host port, no other host), with npm's settings from the orchestrator and the package's own
scripts off; kept under `<deps_root>/<digest>/node_modules`. Before anything of the tree runs, its
manifests are judged from the hub (lock_policy.py: git, file, link and URL dependencies are refused
with a one-line reason) and its package-manager config files (.npmrc, .yarnrc*, .pnpmfile.*) are
removed from the install's checkout.
A sandbox that runs checks gets a writable `node_modules` of links into that cache, whose target
is bound read-only: tools may write their caches beside the links, never into the packages.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agentswarm.agent.checks import CHECK_ENV
from agentswarm.git.repo import open_repo
from agentswarm.sandbox import tsc_fast
from agentswarm.sandbox.base import SandboxHandle
from agentswarm.sandbox.local import LocalSandboxBackend
from agentswarm.sandbox.lock_policy import refusal
from agentswarm.sandbox.registry_proxy import registry_url

OUTPUT_TAIL = 20_000
LOCK_FILES = ("package-lock.json", "pnpm-lock.yaml", "yarn.lock")
MANIFESTS = (*LOCK_FILES, "npm-shrinkwrap.json", "package.json")
PACKAGE_CONFIG = frozenset({".npmrc", ".yarnrc", ".yarnrc.yml", ".pnpmfile.cjs", ".pnpmfile.mjs"})
REFUSED = 126  # the exit code of an install refused before it ran (lock_policy.py)
_installing: dict[str, threading.Lock] = {}  # one install per lock file at a time in this process
_guard = threading.Lock()


def deps_root(hub_path: Path) -> Path:
    """Installed dependencies, one directory per lock file, beside the hub."""
    return hub_path.resolve().parent / "deps"


@dataclass
class CheckResult:
    command: str
    exit_code: int
    output: str  # the tail, capped
    duration_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def lock_digest(hub: str, sha: str) -> str | None:
    """A digest of the dependency manifests at sha (lock file and package.json), or None without a lock file."""
    return _digest(manifests(hub, sha))


def manifests(hub: str, sha: str) -> dict[str, bytes]:
    """The dependency manifests at sha, read from the hub: name -> content."""
    repo = open_repo(hub)
    listed = repo.run("ls-tree", "--name-only", sha, "--", *MANIFESTS)
    present = set(listed.stdout.decode().split()) if listed.returncode == 0 else set(MANIFESTS)
    found = {}
    for name in MANIFESTS:
        if name in present:
            blob = repo.run("cat-file", "blob", f"{sha}:{name}")
            if blob.returncode == 0:
                found[name] = blob.stdout
    return found


def _digest(files: dict[str, bytes]) -> str | None:
    if not any(name in files for name in LOCK_FILES):
        return None
    digest = hashlib.sha256()
    for name in (*LOCK_FILES, "package.json"):  # the digest of every cache made before npm-shrinkwrap.json counted
        if name in files:
            digest.update(name.encode() + b"\0" + files[name] + b"\0")
    if "npm-shrinkwrap.json" in files:
        digest.update(b"npm-shrinkwrap.json\0" + files["npm-shrinkwrap.json"] + b"\0")
    return digest.hexdigest()


def ensure_deps(backend: LocalSandboxBackend, hub: str, sha: str, install: str, root: Path,
                timeout_s: float, *, run_id: str = "deps",
                tsc_snapshot: bool = False) -> tuple[Path | None, CheckResult | None]:
    """(node_modules of sha's lock file, the install's result if one ran now); (None, failed result) if it failed.

    No install command or no lock file: (None, None), the checks run without dependencies.
    `tsc_snapshot` (TSC_SNAPSHOT): the node_modules given is the overlay whose `.bin/tsc` starts from
    a startup snapshot (sandbox/tsc_fast.py), built here once per lock file if it is not yet; the
    plain node_modules when it cannot be. Either way bind `deps_mount(modules)` read-only.
    """
    files = manifests(hub, sha) if install else {}
    digest = _digest(files)
    if not digest:
        return None, None
    refused = refusal(files, registry_url(backend.config.registry))
    if refused:
        return None, CheckResult(install, REFUSED, refused, 0.0)
    # One spelling of the cache for every caller, its real path: the tsc overlay's links and snapshot
    # hold absolute paths, and a sandbox sees only what is bound, not a link in front of it.
    cache = root.resolve() / digest
    modules = cache / "node_modules"
    if not modules.is_dir():
        with _lock_of(digest):
            if not modules.is_dir():  # else another thread installed it while this one waited
                installed, res = _install(backend, hub, sha, install, cache, timeout_s, run_id, tsc_snapshot)
                return (_fast(installed, tsc_snapshot) if installed else None), res
    if tsc_snapshot and tsc_fast.wanted(modules):  # installed before the snapshot existed, or another node
        lock = _lock_of(digest)
        # One build; the other threads wait for it (bounded): with many slots the first wave of checks
        # would otherwise all start the plain tsc while it builds.
        if lock.acquire(timeout=tsc_fast.BUILD_WAIT_S):
            try:
                if tsc_fast.wanted(modules):
                    _build_fast_tsc(backend, hub, sha, modules, run_id)
            finally:
                lock.release()
    return _fast(modules, tsc_snapshot), None


def _build_fast_tsc(backend: LocalSandboxBackend, hub: str, sha: str, modules: Path, run_id: str) -> None:
    sb = checkout(backend, hub, sha, f"tsc-{modules.parent.name[:12]}", run_id=run_id)
    try:
        attach_deps(backend, sb, modules)
        tsc_fast.build(backend, sb, modules)
    finally:
        backend.terminate(sb)


def _lock_of(digest: str) -> threading.Lock:
    """This process's one lock for installing (and snapshotting) a lock file's dependencies."""
    with _guard:
        return _installing.setdefault(digest, threading.Lock())


def _fast(modules: Path, tsc_snapshot: bool) -> Path:
    return (tsc_fast.fast_modules(modules) or modules) if tsc_snapshot else modules


def deps_mount(modules: Path) -> str:
    """What a sandbox using `modules` must see read-only: its lock file's whole cache directory (the
    installed node_modules, and the tsc overlay and snapshot beside it)."""
    return str(modules.parent)


def _install(backend: LocalSandboxBackend, hub: str, sha: str, install: str, cache: Path, timeout_s: float,
             run_id: str, tsc_snapshot: bool) -> tuple[Path | None, CheckResult]:
    modules = cache / "node_modules"
    digest = cache.name
    sb = checkout(backend, hub, sha, f"deps-{digest[:12]}", run_id=run_id)
    try:
        remove_package_config(Path(sb.workdir) / "repo")
        res = run_in(backend, sb, install, timeout_s, network=True)
        built = Path(sb.workdir) / "repo" / "node_modules"
        if res.ok and built.is_dir():
            cache.mkdir(parents=True, exist_ok=True)
            staging = cache / f".node_modules.{os.getpid()}"
            shutil.move(str(built), staging)
            try:
                os.replace(staging, modules)
            except OSError:  # another process installed the same lock file first: keep theirs
                shutil.rmtree(staging, ignore_errors=True)
        if tsc_snapshot and modules.is_dir() and tsc_fast.wanted(modules):
            attach_deps(backend, sb, modules)  # the checkout, now with the cache's packages at their final paths
            tsc_fast.build(backend, sb, modules)
        return (modules if modules.is_dir() else None), res
    finally:
        backend.terminate(sb)


def remove_package_config(repo: Path) -> list[str]:
    """Remove the tree's package-manager config files (npm, yarn, pnpm), wherever they are; their paths."""
    removed = []
    for top, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git" or Path(top) != repo]
        for name in (*names, *dirs):
            if name in PACKAGE_CONFIG:
                path = Path(top) / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(str(path.relative_to(repo)))
    return removed


def attach_deps(backend: LocalSandboxBackend, sb: SandboxHandle, modules: Path, repo: str = "repo") -> None:
    """Give the sandbox's checkout a writable node_modules of links into the read-only cache."""
    target = Path(sb.workdir) / repo / "node_modules"
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)
    target.mkdir()
    for entry in sorted(modules.iterdir()):
        (target / entry.name).symlink_to(entry)
    backend.add_readonly(sb, deps_mount(modules))


def checkout(backend: LocalSandboxBackend, hub: str, sha: str, name: str, *, run_id: str) -> SandboxHandle:
    """A fresh sandbox whose repo/ is the hub at sha (detached).

    One left by a process killed mid-check (same name) is removed first: a check never resumes.
    """
    backend.terminate(f"{run_id}/{name}-a1")
    sb = backend.create(run_id=run_id, task_id=name, attempt=1, env=dict(CHECK_ENV))
    backend.prepare_repo(sb, hub)
    open_repo(Path(sb.workdir) / "repo").out("checkout", "--quiet", "--detach", sha)
    return sb


def run_in(backend: LocalSandboxBackend, sb: SandboxHandle, command: str, timeout_s: float, *,
           network: bool = False, repo: str = "repo") -> CheckResult:
    """One shell command in the sandbox's checkout: exit code, output tail, time."""
    started = time.monotonic()
    res = backend.exec(sb, ["sh", "-c", f"cd {repo} && {command}"], timeout_s=timeout_s, network=network)
    output = (res.stdout + ("\n" if res.stdout and res.stderr else "") + res.stderr)[-OUTPUT_TAIL:]
    return CheckResult(command, res.exit_code, output, round(time.monotonic() - started, 2), res.timed_out)
