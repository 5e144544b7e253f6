"""bubblewrap isolation of the local backend: what a sandboxed command is, sees and may touch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentswarm.sandbox import isolation
from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig
from tests.support.env import ROOT


@pytest.fixture
def backend(tmp_path: Path) -> LocalSandboxBackend:
    return LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap"))


@pytest.mark.bwrap
def test_a_command_runs_unprivileged_read_only_offline_and_alone(backend, tmp_path):
    sb = backend.create(run_id="r1", task_id="t1", attempt=1, env={"VISIBLE": "yes"})
    script = ("id -u; echo $VISIBLE; env | grep -c DATABASE_URL; ls /proc | grep -c '^[0-9]'; "
              f"cat {ROOT}/.env 2>&1 | head -1; ls {ROOT}/var 2>&1 | head -1; touch /usr/x 2>&1; "
              "echo written > mine.txt && cat mine.txt")
    res = backend.exec(sb, ["sh", "-c", script], timeout_s=30)
    lines = res.stdout.splitlines()
    expected_uid = str(backend.config.uid) if os.geteuid() == 0 else str(os.geteuid())
    assert res.exit_code == 0, res.stderr
    assert lines[0] == expected_uid and lines[1] == "yes" and lines[2] == "0"
    assert int(lines[3]) < 10  # its own PID namespace: a handful of processes, not the machine's
    assert "No such file" in lines[4] and "No such file" in lines[5]  # the project's .env and var/ are not there
    assert "Read-only" in lines[6] and lines[7] == "written"
    backend.terminate(sb)


@pytest.mark.bwrap
def test_terminate_ends_what_escaped_into_the_background(backend):
    sb = backend.create(run_id="r1", task_id="t2", attempt=1, env={})
    res = backend.exec(sb, ["sh", "-c", "setsid sh -c 'exec sleep 927' >/dev/null 2>&1 & echo $!"], timeout_s=30)
    assert res.exit_code == 0
    backend.terminate(sb)
    leftover = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == b"sleep\x00927\x00"]
    assert leftover == []


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_missing_bubblewrap_is_one_line_naming_the_fix(tmp_path, pg_url):
    isolation.check_bwrap.cache_clear()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.update(PATH=str(tmp_path), SANDBOX_ROOT=str(tmp_path / "sb"))  # no bwrap on this PATH
    proc = subprocess.run([sys.executable, "-m", "agentswarm.ops.cli", "check", "--no-services"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "bwrap is not installed" in proc.stderr and "apt-get install bubblewrap" in proc.stderr
    assert "SANDBOX_ISOLATION=none" in proc.stderr
    env["SANDBOX_ISOLATION"] = "none"
    ok = subprocess.run([sys.executable, "-m", "agentswarm.ops.cli", "check", "--no-services"], env=env,
                        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ok.returncode == 0 and "UNISOLATED" in ok.stdout, ok.stderr
