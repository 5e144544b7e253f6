"""The reconciler's checks of `main`, each in an isolated sandbox: agent-written code never runs on the host.

Dependencies are installed once per lock file, in a sandbox that may use the network but holds
no secret and runs the install with the package's own scripts off (`--ignore-scripts` in the
default command), and kept in a cache keyed by the lock file. Each check then runs in a sandbox
with no network at all: the cache is bound read-only, and the checkout's own `node_modules` is a
writable directory of links into it (so tools may write their caches there, never the packages).
Checks use the local backend (bubblewrap unless SANDBOX_ISOLATION=none) whatever SANDBOX_BACKEND
says: they need the cache on this machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from agentswarm.git.repo import open_repo
from agentswarm.sandbox import SandboxHandle
from agentswarm.sandbox.local import LocalSandboxBackend

OUTPUT_TAIL = 20_000
LOCK_FILES = ("package-lock.json", "pnpm-lock.yaml", "yarn.lock")
CHECK_RUN = "reconcile"  # the pseudo run id of check sandboxes


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
    repo = open_repo(hub)
    digest, found = hashlib.sha256(), False
    for name in (*LOCK_FILES, "package.json"):
        blob = repo.run("cat-file", "blob", f"{sha}:{name}")
        if blob.returncode == 0:
            digest.update(name.encode() + b"\0" + blob.stdout + b"\0")
            found = found or name in LOCK_FILES
    return digest.hexdigest() if found else None


def run_checks(backend: LocalSandboxBackend, hub: str, sha: str, install: str, commands: list[str],
               timeout_s: float, deps_root: Path) -> list[CheckResult]:
    """Install (once per lock file), then every command against sha; stop at a failed install."""
    results: list[CheckResult] = []
    modules: Path | None = None
    digest = lock_digest(hub, sha) if install else None
    if digest:
        cache = deps_root / digest
        if not (cache / "node_modules").is_dir():
            res = _install(backend, hub, sha, install, cache, timeout_s)
            results.append(res)
            if not res.ok:
                return results
        modules = cache / "node_modules"
    sb = _checkout(backend, hub, sha, f"check-{sha[:12]}")
    try:
        if modules is not None:
            _link_modules(Path(sb.workdir) / "repo" / "node_modules", modules)
            backend.add_readonly(sb, str(modules))
        for command in commands:
            results.append(_run(backend, sb, command, timeout_s))
    finally:
        backend.terminate(sb)
    return results


def _link_modules(target: Path, modules: Path) -> None:
    """A writable node_modules whose entries link into the read-only cache (tools write caches beside them)."""
    target.mkdir()
    for entry in sorted(modules.iterdir()):
        (target / entry.name).symlink_to(entry)


def _checkout(backend: LocalSandboxBackend, hub: str, sha: str, name: str) -> SandboxHandle:
    sb = backend.create(run_id=CHECK_RUN, task_id=name, attempt=1, env={"CI": "true"})
    backend.prepare_repo(sb, hub)
    open_repo(Path(sb.workdir) / "repo").out("checkout", "--quiet", "--detach", sha)
    return sb


def _install(backend: LocalSandboxBackend, hub: str, sha: str, install: str, cache: Path,
             timeout_s: float) -> CheckResult:
    """Run the install in a networked (but otherwise isolated) sandbox; keep node_modules under cache."""
    sb = _checkout(backend, hub, sha, f"deps-{cache.name[:12]}")
    try:
        res = _run(backend, sb, install, timeout_s, network=True)
        built = Path(sb.workdir) / "repo" / "node_modules"
        if res.ok and built.is_dir():
            cache.mkdir(parents=True, exist_ok=True)
            staging = cache / f".node_modules.{os.getpid()}"
            shutil.move(str(built), staging)
            os.replace(staging, cache / "node_modules")
        return res
    finally:
        backend.terminate(sb)


def _run(backend: LocalSandboxBackend, sb: SandboxHandle, command: str, timeout_s: float, *,
         network: bool = False) -> CheckResult:
    started = time.monotonic()
    res = backend.exec(sb, ["sh", "-c", f"cd repo && {command}"], timeout_s=timeout_s, network=network)
    output = (res.stdout + ("\n" if res.stdout and res.stderr else "") + res.stderr)[-OUTPUT_TAIL:]
    return CheckResult(command, res.exit_code, output, round(time.monotonic() - started, 2), res.timed_out)
