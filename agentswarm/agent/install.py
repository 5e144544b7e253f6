"""Installing the external agents' CLIs: pinned versions, from their registries, into the tools cache.

Invariant: each agent lives in its own directory under the tools home (AGENT_TOOLS_DIR), complete
once its executable exists and answers; installing again is then a no-op. Sandboxes bind the tools
home read-only (work/drive.py), so the agent runs inside bubblewrap with no network and no registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MINI_PACKAGES = ("mini-swe-agent==2.4.6", "mcp")  # litellm imports `mcp` whenever tools are passed
PI_PACKAGE = "@mariozechner/pi-coding-agent@0.73.1"  # engines: node >= 20.6.0
INSTALL_TIMEOUT_S = 900
EXTERNAL = ("mini-swe-agent", "pi")


def tools_dir(configured: Path | None = None) -> Path:
    """The tools home: AGENT_TOOLS_DIR, else $AGENTSWARM_TOOLS_DIR, else the user's cache (absolute)."""
    found = configured or os.environ.get("AGENTSWARM_TOOLS_DIR") or Path.home() / ".cache" / "agentswarm" / "tools"
    return Path(found).expanduser().resolve()


def mini_bin(home: Path) -> Path:
    return home / "mini-swe-agent" / "bin" / "mini"


def pi_bin(home: Path) -> Path:
    return home / "pi" / "node_modules" / ".bin" / "pi"


def _answers(argv: list[str]) -> bool:
    env = dict(os.environ, MSWEA_SILENT_STARTUP="1", MSWEA_CONFIGURED="true")
    try:
        return subprocess.run(argv, env=env, capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run(argv: list[str], what: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    if res.returncode != 0:
        raise RuntimeError(f"installing {what} failed (exit {res.returncode}): {(res.stderr or res.stdout)[-1500:]}")


def install_mini(home: Path, python: str = sys.executable) -> Path:
    """mini-swe-agent in its own virtualenv under home (made from `python`, the sandboxes' interpreter)."""
    dest = home / "mini-swe-agent"
    py = dest / "bin" / "python"
    if mini_bin(home).is_file() and _answers([str(py), "-c", "import minisweagent, mcp"]):
        return mini_bin(home)
    if not py.is_file():
        _run([python, "-m", "venv", str(dest)], "mini-swe-agent's virtualenv")
    _run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *MINI_PACKAGES], "mini-swe-agent")
    return mini_bin(home)


def install_pi(home: Path) -> Path:
    """Pi from the npm registry into home/pi (a plain node_modules; /usr/bin/node runs it)."""
    dest = home / "pi"
    if pi_bin(home).is_file() and _answers([str(pi_bin(home)), "--version"]):
        return pi_bin(home)
    dest.mkdir(parents=True, exist_ok=True)
    _run(["npm", "install", "--prefix", str(dest), "--no-audit", "--no-fund", "--omit=dev", PI_PACKAGE], "pi")
    return pi_bin(home)


def install_agent(name: str, home: Path, python: str = sys.executable) -> Path | None:
    """Install what AGENT=name needs; None when it needs nothing (builtin, cmd:...)."""
    if name == "mini-swe-agent":
        return install_mini(home, python)
    if name == "pi":
        return install_pi(home)
    return None
