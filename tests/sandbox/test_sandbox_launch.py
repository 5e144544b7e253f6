"""How a local sandbox's command starts: limits set by prlimit (or the Python launcher where it is missing),
and the package's bytecode written by the orchestrator so sandboxes, which cannot write it, never recompile it."""

from __future__ import annotations

import importlib.util
import resource
import sys
from pathlib import Path

import pytest

import agentswarm.agent.runner
from agentswarm.sandbox import launch
from agentswarm.sandbox.local import LocalSandboxBackend, LocalSandboxConfig


@pytest.mark.parametrize("tool", ["prlimit", "launcher"])
def test_limits_apply_whichever_program_sets_them(tmp_path: Path, monkeypatch, tool: str) -> None:
    if tool == "launcher":
        monkeypatch.setattr(launch, "prlimit", lambda: None)
    elif launch.prlimit() is None:
        pytest.skip("util-linux prlimit is not installed")
    hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    backend = LocalSandboxBackend(LocalSandboxConfig(isolation="none", root=tmp_path / "sb", max_file_mb=1,
                                                     max_open_files=hard_nofile + 1000, cpu_seconds=77))
    sb = backend.create(run_id="r", task_id="t", attempt=1, env={})
    cmd = launch.limited(["true"], backend._limits(), sys.executable)
    assert (Path(cmd[0]).name == "prlimit") == (tool == "prlimit")  # prlimit: no interpreter started before argv
    res = backend.exec(sb, ["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -f; ulimit -c; ulimit -t"], timeout_s=10)
    capped = str(hard_nofile) if hard_nofile != resource.RLIM_INFINITY else str(hard_nofile + 1000)
    assert res.stdout.split() == [capped, capped, str(1024 * 1024 // 512), "0", "77"], res.stderr
    missing = backend.exec(sb, ["no-such-program"], timeout_s=10)
    assert missing.exit_code == 127 and "no-such-program" in missing.stderr
    backend.terminate(sb)


def test_the_runners_bytecode_is_ready_before_any_sandbox_starts(tmp_path: Path) -> None:
    LocalSandboxBackend(LocalSandboxConfig(isolation="none", root=tmp_path / "sb"))
    source = Path(agentswarm.agent.runner.__file__)
    cached = Path(importlib.util.cache_from_source(str(source)))
    header = cached.read_bytes()[:16]  # magic, flags, the source's mtime and size: what an import checks
    assert header[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(header[4:8], "little") == 0
    assert int.from_bytes(header[8:12], "little") == int(source.stat().st_mtime) & 0xFFFFFFFF
    assert int.from_bytes(header[12:16], "little") == source.stat().st_size & 0xFFFFFFFF
