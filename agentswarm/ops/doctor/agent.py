"""The chosen external agent (AGENT=mini-swe-agent or pi): installed in the tools cache, and starts in a sandbox.

Inside one fresh local sandbox, with the tools cache bound read-only as a run binds it, the agent's CLI
must report its version: the sandbox has no network, so what answers there answers during the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agentswarm.agent.install import EXTERNAL, mini_bin, pi_bin, tools_dir
from agentswarm.config import SandboxBackendName
from agentswarm.sandbox.base import SandboxError
from agentswarm.sandbox.factory import check_backend_for

FIX = "`make agents` (or `agentswarm agents install`) installs it, pinned, from its registry"


def version_argv(agent: str, home: Path) -> list[str]:
    """The command that prints the agent's version, run where the agent will run."""
    if agent == "mini-swe-agent":
        python = mini_bin(home).parent / "python"
        return [str(python), "-c", "import minisweagent; print('mini-swe-agent', minisweagent.__version__)"]
    return [str(pi_bin(home)), "--version"]


def check_agent(ladder: Any) -> None:
    """AGENT's CLI is in the tools cache and answers inside a local sandbox."""
    s = ladder.settings
    if s.agent not in EXTERNAL:
        ladder.ok("agent", f"AGENT={s.agent}: nothing to install")
        return
    home = tools_dir(s.agent_tools_dir)
    binary = mini_bin(home) if s.agent == "mini-swe-agent" else pi_bin(home)
    if not binary.is_file():
        ladder.fail("agent", f"{s.agent} is not installed in {home}", FIX)
        return
    if s.sandbox_backend is not SandboxBackendName.local:
        ladder.ok("agent", f"{s.agent} installed at {binary} (not probed: the sandboxes are not local)")
        return
    if not ladder.needs("agent", "sandbox"):
        return
    try:
        backend = check_backend_for(s)
        sb = backend.create(run_id="doctor", task_id=f"agent-{os.getpid()}", attempt=1, env={"NO_COLOR": "1"})
        try:
            backend.add_readonly(sb, str(home))
            res = backend.exec(sb, version_argv(s.agent, home), timeout_s=120)
        finally:
            backend.terminate(sb)
    except SandboxError as exc:
        ladder.fail("agent", f"{s.agent} could not be started in a sandbox: {exc}", FIX)
        return
    text = (res.stdout.strip() or res.stderr.strip()).splitlines()
    if res.exit_code != 0:
        ladder.fail("agent", f"{s.agent} exited {res.exit_code} in a sandbox: {(text[-1] if text else '')[:300]}", FIX)
        return
    ladder.ok("agent", f"{s.agent} {text[-1] if text else '?'} answers inside a sandbox (from {home})")
