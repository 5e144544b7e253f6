"""The local backend's per-sandbox cgroup and disk quota: made with the sandbox, joined by every command,
gone with terminate (from any backend instance, as the reaper's), and said plainly when they cannot be."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="per-sandbox cgroups and tmpfs quotas need root")


def make(root: Path, **limits: object) -> LocalSandboxBackend:
    config = {"root": root, "isolation": "none", "pids_max": 100, "cgroup_memory_mb": 512, "cgroup_cpus": 0.5,
              "disk_mb": 16, **limits}
    return LocalSandboxBackend(LocalSandboxConfig.model_validate(config))


def mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if f" {path}/" in line]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@root_only
def test_each_command_runs_in_its_sandboxs_groups_with_their_limits(tmp_path: Path) -> None:
    backend = make(tmp_path / "sb", max_processes=300)
    if not backend.cgroups.bases:
        pytest.skip(backend.cgroups.reason)
    sb = backend.create(run_id="r", task_id="t", attempt=1, env={})
    try:
        groups = json.loads((Path(sb.meta["dir"]) / "meta.json").read_text())["cgroups"]
        assert groups and all(g.endswith("/r@t-a1") for g in groups)
        res = backend.exec(sb, ["cat", "/proc/self/cgroup"], timeout_s=60)
        assert res.exit_code == 0
        mine = {line.split(":", 2)[2] for line in res.stdout.splitlines()}
        assert sum(1 for g in groups if any(g.endswith(path) for path in mine)) == len(groups)
        by_file = {f.name: f.read_text().strip() for g in map(Path, groups) for f in g.iterdir()
                   if f.name in ("pids.max", "memory.limit_in_bytes", "memory.max", "cpu.cfs_quota_us", "cpu.max")}
        if "pids" in backend.cgroups.bases:
            assert by_file["pids.max"] == "100"
            swarm = backend.cgroups.bases["pids"][1]  # all the swarm's sandboxes together, instead of RLIMIT_NPROC
            assert (swarm / "pids.max").read_text().strip() == "300"
            res = backend.exec(sb, ["sh", "-c", "ulimit -u"], timeout_s=60)
            assert res.stdout.strip() != "300"
        if "memory" in backend.cgroups.bases:
            # its memory, and room for what it writes to its 16 MB tmpfs (charged to it): no OOM kill at the quota
            assert str(528 * 1024 * 1024) in {by_file.get("memory.limit_in_bytes"), by_file.get("memory.max")}
    finally:
        backend.terminate(sb)


@root_only
def test_terminate_kills_what_left_the_group_and_the_marker_then_removes_groups_and_mounts(tmp_path: Path) -> None:
    backend = make(tmp_path / "sb")
    if not backend.cgroups.bases:
        pytest.skip(backend.cgroups.reason)
    sb = backend.create(run_id="r", task_id="t", attempt=1, env={})
    sbdir = Path(sb.meta["dir"])
    # A daemon in a new session, its environment (so the marker) wiped: no process group, no marker leads to it.
    res = backend.exec(sb, ["sh", "-c", "setsid env -i sleep 300 >/dev/null 2>&1 & echo $!"], timeout_s=60)
    pid = int(res.stdout.split()[-1])
    assert alive(pid) and mounts_under(sbdir)
    backend.terminate(sb)
    deadline = time.monotonic() + 60
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
    assert not sbdir.exists() and not mounts_under(sbdir)
    assert not any(group.exists() for group in backend.cgroups.dirs(sb.id))


@root_only
def test_another_backend_instance_reaps_a_sandbox_with_its_groups_and_mounts(tmp_path: Path) -> None:
    run = f"run-{uuid.uuid4().hex[:6]}"
    creator = make(tmp_path / "sb")
    sb = creator.create(run_id=run, task_id="t", attempt=1, env={})
    creator.exec(sb, ["sh", "-c", "sleep 300 >/dev/null 2>&1 &"], timeout_s=60)
    groups = json.loads((Path(sb.meta["dir"]) / "meta.json").read_text())["cgroups"]
    reaper = make(tmp_path / "sb")  # as the monitor's process would: no memory of the creation
    assert [info.id for info in reaper.list(run)] == [sb.id]
    reaper.terminate(sb.id)
    assert reaper.list(run) == [] and not mounts_under(Path(sb.meta["dir"]))
    assert not any(Path(g).exists() for g in groups)


@root_only
def test_orchestrator_files_and_the_repo_share_the_quota_and_the_layout_is_unchanged(tmp_path: Path) -> None:
    backend = make(tmp_path / "sb", disk_mb=4)
    if "no disk quota" in backend.limits:
        pytest.skip(backend.limits)
    sb = backend.create(run_id="r", task_id="t", attempt=1, env={})
    try:
        assert sb.workdir == str(tmp_path.resolve() / "sb" / "r" / "t-a1" / "work")
        assert sorted(p.name for p in Path(sb.workdir).iterdir()) == []
        backend.put_file(sb, "task.json", b"{}")
        with pytest.raises(OSError):  # the orchestrator's own writes count too: nothing lands past the quota
            backend.put_file(sb, "huge.bin", b"x" * (5 * 1024 * 1024))
        assert backend.get_file(sb, "task.json") == b"{}"
        res = backend.exec(sb, ["sh", "-c", 'echo hi > "$HOME/h" && cat "$HOME/h"'], timeout_s=60)
        assert (res.exit_code, res.stdout) == (0, "hi\n")
    finally:
        backend.terminate(sb)


def test_limits_off_are_said_plainly(tmp_path: Path) -> None:
    backend = make(tmp_path / "sb", pids_max=None, cgroup_memory_mb=None, cgroup_cpus=None, disk_mb=None)
    assert backend.limits == "no cgroup per sandbox (no cgroup limit configured); no disk quota (SANDBOX_DISK_MB unset)"
    sb = backend.create(run_id="r", task_id="t", attempt=1, env={})
    try:
        assert not mounts_under(Path(sb.meta["dir"]))
        assert backend.exec(sb, ["true"], timeout_s=60).exit_code == 0
    finally:
        backend.terminate(sb)


def test_settings_reach_the_local_backend() -> None:
    from agentswarm.config import load_settings
    from agentswarm.sandbox.factory import backend_config

    fields = backend_config(load_settings(sandbox_root="/tmp/x", sandbox_pids_max=0, sandbox_disk_mb=0,
                                          sandbox_memory_mb=1024, sandbox_cpu=1.5))[1]
    config = LocalSandboxConfig(**fields)
    assert (config.pids_max, config.disk_mb, config.cgroup_memory_mb, config.cgroup_cpus) == (None, None, 1024, 1.5)
    config = LocalSandboxConfig(**backend_config(load_settings(sandbox_root="/tmp/x"))[1])
    assert (config.pids_max, config.disk_mb) == (2048, 4096)


@root_only
def test_a_full_disk_is_enospc_not_an_oom_kill(tmp_path: Path) -> None:
    """The tmpfs pages a sandbox writes are charged to its memory group: a disk larger than its memory still fills
    up to the quota and then says ENOSPC."""
    backend = make(tmp_path / "sb", cgroup_memory_mb=64, disk_mb=96)
    if "memory" not in backend.cgroups.bases or "no disk quota" in backend.limits:
        pytest.skip(backend.limits)
    sb = backend.create(run_id="r", task_id="t", attempt=1, env={})
    try:
        res = backend.exec(sb, ["dd", "if=/dev/zero", "of=big", "bs=1M", "count=120"], timeout_s=120)
        assert res.exit_code == 1 and "No space left on device" in res.stderr, res
        assert (Path(sb.workdir) / "big").stat().st_size > 64 * 1024 * 1024
    finally:
        backend.terminate(sb)


@root_only
def test_groups_gone_since_creation_are_made_again(tmp_path: Path) -> None:
    """As after a reboot: the sandbox's directory is still there, its cgroups are not."""
    from agentswarm.sandbox import cgroups

    backend = make(tmp_path / "sb")
    if "pids" not in backend.cgroups.bases:
        pytest.skip(backend.cgroups.reason)
    sb = backend.create(run_id="r", task_id="t", attempt=1, env={})
    try:
        groups = json.loads((Path(sb.meta["dir"]) / "meta.json").read_text())["cgroups"]
        cgroups.release(groups)
        assert not any(Path(g).exists() for g in groups)
        res = backend.exec(sb, ["cat", "/proc/self/cgroup"], timeout_s=60)
        assert res.exit_code == 0 and "r@t-a1" in res.stdout, res
        pids = backend.cgroups.bases["pids"][1] / "r@t-a1"
        assert (pids / "pids.max").read_text().strip() == "100"
    finally:
        backend.terminate(sb)
    assert not any(g.exists() for g in backend.cgroups.dirs(sb.id))
