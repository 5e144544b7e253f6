"""Finding a sandbox's processes by their marker, including one caught in the middle of execve()."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from agentswarm.sandbox import procs


def test_a_process_that_keeps_exec_ing_is_never_missed(tmp_path) -> None:
    # Each exec replaces the process's memory; for a moment its environment reads as empty. A scan that
    # took that for "unmarked" would let the reaper miss a process (seen in CI as a flaky reaper test).
    marker = f"{tmp_path}/run-x/t1-a1"
    script = tmp_path / "reexec.sh"
    script.write_text('n=$((${N:-0}+1)); export N=$n; [ "$n" -lt 100000 ] && exec sh "$0"\n')
    env = {"PATH": os.environ["PATH"], procs.MARKER: marker}
    proc = subprocess.Popen(["sh", str(script)], env=env, start_new_session=True)
    try:
        misses = 0
        scans = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and proc.poll() is None:
            found = procs.marked_processes(f"{tmp_path}/")
            if proc.poll() is not None:
                break
            scans += 1
            misses += found.get(marker) != [proc.pid]
        assert scans > 50, scans
        assert misses == 0, f"{misses} of {scans} scans missed a live marked process"
    finally:
        procs.kill_marked(marker)
        proc.wait(timeout=10)
    assert procs.marked_processes(f"{tmp_path}/") == {}


def test_kernel_threads_and_unmarked_processes_are_skipped_quickly() -> None:
    start = time.monotonic()
    assert procs.marked_processes("/nowhere/") == {}
    assert time.monotonic() - start < 2
    assert procs._is_kernel_thread(2) and not procs._is_kernel_thread(os.getpid())
    assert sys.platform == "linux"
