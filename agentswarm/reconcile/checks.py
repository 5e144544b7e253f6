"""The reconciler's checks of `main`, each in an isolated sandbox: agent-written code never runs on the host.

Dependencies come from the shared cache (`agentswarm.sandbox.deps`): installed once per lock file
in a networked sandbox with no secret, then bound read-only into each check's sandbox, which has
no network at all. Checks use the local backend (bubblewrap unless SANDBOX_ISOLATION=none)
whatever SANDBOX_BACKEND says: they need the cache on this machine.
"""

from __future__ import annotations

from pathlib import Path

from agentswarm.sandbox.deps import CheckResult, attach_deps, checkout, ensure_deps, run_in
from agentswarm.sandbox.local import LocalSandboxBackend

__all__ = ["CheckResult", "run_checks", "CHECK_RUN"]
CHECK_RUN = "reconcile"  # the pseudo run id of check sandboxes


def run_checks(backend: LocalSandboxBackend, hub: str, sha: str, install: str, commands: list[str],
               timeout_s: float, deps_root: Path) -> list[CheckResult]:
    """Install (once per lock file), then every command against sha; stop at a failed install."""
    results: list[CheckResult] = []
    modules, installed = ensure_deps(backend, hub, sha, install, deps_root, timeout_s, run_id=CHECK_RUN)
    if installed is not None:
        results.append(installed)
        if not installed.ok:
            return results
    sb = checkout(backend, hub, sha, f"check-{sha[:12]}", run_id=CHECK_RUN)
    try:
        if modules is not None:
            attach_deps(backend, sb, modules)
        for command in commands:
            results.append(run_in(backend, sb, command, timeout_s))
    finally:
        backend.terminate(sb)
    return results
