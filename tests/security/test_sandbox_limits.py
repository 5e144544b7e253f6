"""Limits per sandbox, not per uid: a fork bomb in one sandbox leaves another free to fork, and a sandbox
cannot write past its disk quota (real bubblewrap sandboxes, real cgroups and tmpfs; root only)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="per-sandbox cgroups and tmpfs quotas need root")

# Forks children that sleep until it cannot fork any more (or 300 of them: bounded whatever holds),
# says how far it got in a file the test polls, then keeps its children alive while the other sandbox runs.
BOMB = """
import os, sys, time
kids = 0
why = "no limit met"
while kids < 300:
    try:
        pid = os.fork()
    except OSError as exc:
        why = type(exc).__name__
        break
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    kids += 1
with open("bombed.tmp", "w") as f:
    f.write(f"{kids} {why}")
os.rename("bombed.tmp", "bombed")
time.sleep(240)
"""
FORKS = "for i in 1 2 3 4 5; do /bin/true; done; echo ok"


@pytest.fixture
def backend(tmp_path: Path) -> LocalSandboxBackend:
    # A uid of its own, so that no other test's sandboxes count in RLIMIT_NPROC, which stays per uid:
    # small enough that one sandbox alone could exhaust it, were it the only limit.
    uid = 40000 + os.getpid() % 20000
    return LocalSandboxBackend(LocalSandboxConfig(root=tmp_path / "sandboxes", isolation="bwrap", uid=uid,
                                                  max_processes=200, pids_max=64, disk_mb=8))


def test_a_fork_bomb_in_one_sandbox_does_not_stop_another_from_forking(backend: LocalSandboxBackend) -> None:
    if "pids" not in backend.cgroups.bases:
        pytest.skip(f"no pids controller here: {backend.cgroups.reason}")
    run = f"bomb-{uuid.uuid4().hex[:8]}"
    bomber = backend.create(run_id=run, task_id="bomber", attempt=1, env={})
    other = backend.create(run_id=run, task_id="other", attempt=1, env={})
    backend.put_file(bomber, "bomb.py", BOMB.encode())
    results: dict[str, object] = {}
    thread = threading.Thread(target=lambda: results.update(bomb=backend.exec(
        bomber, [backend.config.python, "bomb.py"], timeout_s=300)))
    thread.start()
    try:
        status = _wait_for(lambda: backend.get_file(bomber, "bombed"), lambda: not thread.is_alive())
        assert status is not None, f"the bomb did not report: {results.get('bomb')}"
        kids, why = status.decode().split()
        assert why == "BlockingIOError" and int(kids) < 64, status  # stopped by its own pids.max
        res = backend.exec(other, ["sh", "-c", FORKS], timeout_s=120)  # while every child of the bomb lives
        assert (res.exit_code, res.stdout) == (0, "ok\n"), res.stderr
        assert thread.is_alive()  # the bomb was still holding its children
    finally:
        backend.terminate(bomber)
        thread.join(timeout=120)
        backend.terminate(other)
    assert not thread.is_alive()
    for group in backend.cgroups.dirs(bomber.id):
        assert not group.exists()


def test_a_sandbox_cannot_write_past_its_disk_quota(backend: LocalSandboxBackend) -> None:
    if "disk quota" not in backend.limits or "no disk quota" in backend.limits:
        pytest.skip(backend.limits)
    run = f"disk-{uuid.uuid4().hex[:8]}"
    sb = backend.create(run_id=run, task_id="filler", attempt=1, env={})
    sbdir = Path(sb.meta["dir"])
    try:
        res = backend.exec(sb, ["dd", "if=/dev/zero", "of=big", "bs=1M", "count=16"], timeout_s=120)
        assert res.exit_code != 0 and "No space left on device" in res.stderr, res
        # The quota is shared: what work/ holds leaves only the rest for home/ and $TMPDIR.
        res = backend.exec(sb, ["sh", "-c", 'rm big; dd if=/dev/zero of=big bs=1M count=6 && '
                                'dd if=/dev/zero of="$TMPDIR/more" bs=1M count=6'], timeout_s=120)
        assert res.exit_code != 0 and "No space left on device" in res.stderr, res
        written = sum(p.stat().st_size for sub in ("work", "home", "tmp") for p in (sbdir / sub).rglob("*")
                      if p.is_file() and not p.is_symlink())
        assert written <= 8 * 1024 * 1024
        fs = os.statvfs(sb.workdir)
        assert fs.f_blocks * fs.f_frsize <= 8 * 1024 * 1024
    finally:
        backend.terminate(sb)
    assert not sbdir.exists()
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(sbdir) in line]


def _wait_for(read: Callable[[], bytes | None], gave_up: Callable[[], bool], bound_s: float = 240.0) -> bytes | None:
    """read() once it returns something, polling; None if gave_up() or the (generous) bound passes first."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        found = read()
        if found is not None or gave_up():
            return found
        time.sleep(0.1)
    return None
