"""Node and npm on this machine, and the target's install (`npm ci`) in a sandbox, as the gate runs it.

The gate's and the reconciler's checks run in local sandboxes whatever SANDBOX_BACKEND is, with this
machine's Node and the dependencies installed once per lock file (`agentswarm.sandbox.deps`): the
install here fills that same cache, so the run that follows finds it done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from agentswarm.config import GateMode
from agentswarm.git.hub import main_sha
from agentswarm.sandbox import tsc_fast
from agentswarm.sandbox.base import SandboxError
from agentswarm.sandbox.deps import attach_deps, checkout, deps_root, ensure_deps, run_in
from agentswarm.sandbox.factory import check_backend_for

NODE_HINT = "install Node 20+ and npm (Debian: apt-get install nodejs npm; or https://nodejs.org)"
DEFAULT_MIN_NODE = 18  # Vite 5's floor


def _version(tool: str) -> str | None:
    if shutil.which(tool) is None:
        return None
    try:
        proc = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def min_node_major(target: Path) -> int:
    """The Node major the target asks for (`engines.node` of its package.json, `>=N` or `^N`), else 18."""
    try:
        engines = json.loads((target / "package.json").read_text()).get("engines") or {}
    except (OSError, ValueError, AttributeError):
        return DEFAULT_MIN_NODE
    found = re.search(r"(\d+)", str(engines.get("node", ""))) if isinstance(engines, dict) else None
    return int(found.group(1)) if found else DEFAULT_MIN_NODE


def install_command(settings: Any) -> str:
    """The gate's install command when the gate is on, else the reconciler's ('' when neither installs)."""
    return settings.gate_install if settings.gate is not GateMode.off and settings.gate_install else \
        settings.reconcile_install


def check_node(ladder: Any) -> None:
    """node and npm answer here, and node is as new as the target needs."""
    s = ladder.settings
    if not install_command(s) and s.gate is GateMode.off and not s.reconcile_commands:
        ladder.ok("node", "not needed: the gate is off and the reconciler runs nothing")
        return
    node, npm = _version("node"), _version("npm")
    if node is None or npm is None:
        missing = " and ".join(t for t, v in (("node", node), ("npm", npm)) if v is None)
        ladder.fail("node", f"{missing} not found on PATH (the gate and the reconciler run the target's checks "
                    "with them)", NODE_HINT)
        return
    need = min_node_major(Path(s.target_repo_path))
    major = int(re.sub(r"\D", " ", node).split()[0]) if re.search(r"\d", node) else 0
    if major < need:
        ladder.fail("node", f"node {node} is older than the target needs (>= {need})", NODE_HINT)
        return
    ladder.ok("node", f"node {node}, npm {npm} (the target needs node >= {need})")


def check_install(ladder: Any) -> None:
    """The target's install command in a networked sandbox (once per lock file), then node inside one."""
    s = ladder.settings
    command = install_command(s)
    if not command:
        ladder.ok("install", "nothing to install (GATE_INSTALL and RECONCILE_INSTALL are empty)")
        return
    local = s.sandbox_backend.value == "local"  # the checks run in local sandboxes: the `sandbox` step tried one
    if not ladder.needs("install", "hub", "node", *(["sandbox"] if local else [])):
        return
    hub = ladder.facts.get("hub")
    if hub is None:
        ladder.skip("install", "no local copy of the remote hub yet (`agentswarm init` mirrors it)")
        return
    sha = main_sha(hub)
    if sha is None:
        ladder.fail("install", f"{hub} has no main to install from", "see the `hub` step")
        return
    try:
        backend = check_backend_for(s)
        modules, result = ensure_deps(backend, str(hub), sha, command, deps_root(Path(s.hub_path)),
                                      float(s.gate_timeout_s), run_id="doctor", tsc_snapshot=s.tsc_snapshot)
    except SandboxError as exc:
        ladder.fail("install", f"`{command}` could not run in a sandbox: {exc}", "see the `sandbox` step")
        return
    if modules is None and result is not None:
        tail = " | ".join(line for line in result.output.strip().splitlines()[-3:] if line.strip())[:400]
        ladder.fail("install", f"`{command}` exited {result.exit_code}"
                    f"{' (timed out)' if result.timed_out else ''} after {result.duration_s:.0f}s: {tail}",
                    "run it in TARGET_REPO_PATH to see why; the sandbox reaches only NPM_REGISTRY, through "
                    "the orchestrator's proxy, so that registry must be reachable from this machine")
        return
    how = ("no lock file: the checks run without installed dependencies" if modules is None else
           f"installed in {result.duration_s:.0f}s into {modules.parent}" if result is not None else
           f"already installed for this lock file ({modules.parent})")
    if modules is not None:
        how += f"; {tsc_fast.describe(modules)}"
    inside = _node_inside(backend, hub, sha, modules)
    if inside.startswith("✗"):
        ladder.fail("install", f"`{command}`: {how}; but in a sandbox {inside[1:].strip()}",
                    "see the `sandbox` step; the sandbox must see this machine's /usr")
        return
    ladder.ok("install", f"`{command}` in a sandbox: {how}; inside: {inside}")


def _node_inside(backend: Any, hub: Path, sha: str, modules: Path | None) -> str:
    """`node --version` and `npm --version` in a fresh sandbox with the dependencies attached."""
    sb = checkout(backend, str(hub), sha, f"node-{os.getpid()}", run_id="doctor")
    try:
        if modules is not None:
            attach_deps(backend, sb, modules)
        res = run_in(backend, sb, "node --version && npm --version", 120)
    finally:
        backend.terminate(sb)
    if not res.ok:
        return f"✗ `node --version && npm --version` exited {res.exit_code}: {res.output.strip()[-200:]}"
    node, _, npm = res.output.strip().partition("\n")
    return f"node {node.strip()}, npm {npm.strip().splitlines()[-1] if npm.strip() else '?'}"
