"""Run the target's build and test commands in the scratch checkout of `main` (see agentswarm.git.checkout)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

OUTPUT_TAIL = 20_000
LOCK_FILES = ("package-lock.json", "pnpm-lock.yaml", "yarn.lock")


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


def run_command(command: str, cwd: Path, timeout_s: float) -> CheckResult:
    """Run one shell command in its own process group; kill the group at the limit; keep the tail."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "LLM_API_KEY",
                                                                "GIT_TOKEN")}
        env["CI"] = "true"
        proc = subprocess.Popen(command, shell=True, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_TAIL))
        tail = out.read().decode("utf-8", "replace")
    return CheckResult(command, proc.returncode, tail, round(time.monotonic() - started, 2), timed_out)


def _lock_hash(workdir: Path) -> str | None:
    for name in LOCK_FILES:
        path = workdir / name
        if path.exists():
            return hashlib.sha256(path.read_bytes()).hexdigest()
    return None


def run_checks(workdir: Path, install: str, commands: list[str], timeout_s: float) -> list[CheckResult]:
    """Install dependencies when the lock file changed, then run each command; stop at a failed install."""
    results: list[CheckResult] = []
    stamp = workdir / "node_modules" / ".agentswarm-lock"
    digest = _lock_hash(workdir)
    if install and (digest is None or not stamp.exists() or stamp.read_text() != digest):
        if (workdir / "node_modules").exists():
            shutil.rmtree(workdir / "node_modules")
        res = run_command(install, workdir, timeout_s)
        results.append(res)
        if not res.ok:
            return results
        if digest and (workdir / "node_modules").exists():
            stamp.write_text(digest)
    for command in commands:
        results.append(run_command(command, workdir, timeout_s))
    return results
