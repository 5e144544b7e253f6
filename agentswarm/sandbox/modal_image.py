"""The Modal worker image: Debian slim, Node 22, pnpm, git, ripgrep, Python with requests, the worker runner.

It lives in the package (not only in `infra/`) because the Modal backend builds it at
run time from an installed `agentswarm`; `infra/sandbox_image.py` is the `modal run`
entry point that prints the tool versions found in it. Standard library only at import.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

NODE_MAJOR = 22
PNPM_VERSION = "9"
WORKDIR = "/work"
PROMPTS_DIR = Path(__file__).resolve().parents[2] / "prompts"
PROMPTS_IN_IMAGE = "/root/prompts"
# tool -> command printing its version; run in the image by `modal run infra/sandbox_image.py`.
VERSION_COMMANDS: dict[str, list[str]] = {
    "python": ["python", "--version"],
    "requests": ["python", "-c", "import requests; print(requests.__version__)"],
    "runner": ["python", "-c", "import agentswarm.agent.contract as c; print('schema', c.SCHEMA_VERSION)"],
    "node": ["node", "--version"],
    "npm": ["npm", "--version"],
    "pnpm": ["pnpm", "--version"],
    "git": ["git", "--version"],
    "ripgrep": ["rg", "--version"],
}


def worker_image(modal: Any, python_version: str = "3.11") -> Any:
    """The image every sandbox runs; `modal` is the SDK module (or a fake of it)."""
    return (
        modal.Image.debian_slim(python_version=python_version)
        .apt_install("git", "ripgrep", "curl", "ca-certificates", "gnupg", "procps")
        .run_commands(
            f"curl -fsSL https://deb.nodesource.com/setup_{NODE_MAJOR}.x | bash -",
            "apt-get install -y nodejs",
            f"npm install -g pnpm@{PNPM_VERSION}",
            f"mkdir -p {WORKDIR}",
        )
        .pip_install("requests>=2.32")
        .env({"PYTHONPATH": "/root", "PYTHONUNBUFFERED": "1", "GIT_TERMINAL_PROMPT": "0",
              "AGENTSWARM_PROMPTS_DIR": PROMPTS_IN_IMAGE})
        # Last, so that editing the package or a prompt does not rebuild the layers above.
        .add_local_python_source("agentswarm", copy=True)
        .add_local_dir(str(PROMPTS_DIR), PROMPTS_IN_IMAGE, copy=True)
    )


def tool_versions(commands: dict[str, list[str]] | None = None, timeout_s: float = 30) -> dict[str, str]:
    """Run each version command here; a tool absent or failing reads as 'missing: <why>'."""
    found: dict[str, str] = {}
    for tool, argv in (commands or VERSION_COMMANDS).items():
        if shutil.which(argv[0]) is None:
            found[tool] = f"missing: {argv[0]} not on PATH"
            continue
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            found[tool] = f"missing: {exc}"
            continue
        lines = (proc.stdout or proc.stderr).strip().splitlines()
        first = lines[0] if lines else ""
        found[tool] = first if proc.returncode == 0 else f"missing: exit {proc.returncode} {first}".strip()
    return found
