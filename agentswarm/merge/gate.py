"""The gate: the target's checks run on a commit the merge queue is about to land, in a fresh sandbox.

A gate run is a function of (settings, sha, base, options) alone, so that any process may run it:
a new local sandbox (bubblewrap, no network, no secret) whose repo/ is a fresh clone of the hub
(borrowing its objects, read-only) checked out at sha by the orchestrator before anything of the
tree runs, with its own empty $HOME and $TMPDIR, and a `node_modules` of links into the shared
read-only dependency cache of the commit's lock file (installed once per lock file). The sandbox
is removed when the run ends: nothing a tested tree writes (a git hook, git config or
info/attributes, a file in `..`, $HOME or $TMPDIR, a tool's cache, a process) is there for any
later run. The verdict is the exit codes the orchestrator's exec observes from outside; nothing
the tested code writes is read back but the output tail shown to people.

Each run has a time budget that grows with what it tests (GATE_TIMEOUT_BASE_S plus
GATE_TIMEOUT_PER_BRANCH_S per branch of the stack, at most GATE_TIMEOUT_S; the full commands get
GATE_TIMEOUT_S), counted from its first command.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentswarm.agent.checks import FILES, NOT_FOUND, failing_tests, plan_commands
from agentswarm.config import Settings
from agentswarm.git.landing import changed_between, tree_of
from agentswarm.git.repo import GitError
from agentswarm.sandbox import SandboxError
from agentswarm.sandbox.deps import REFUSED, attach_deps, checkout, deps_root, ensure_deps, run_in
from agentswarm.sandbox.factory import check_backend_for
from agentswarm.sandbox.local import LocalSandboxBackend

log = logging.getLogger(__name__)
GATE_RUN = "gate"  # the pseudo run id of the gate's sandboxes
OUTPUT_CAP = 8000
SANDBOX_FAILED = "the gate's sandbox failed"  # how a run whose sandbox broke (not its tree) begins its cannot_run
_swept: set[Path] = set()  # sandbox roots whose leftover gate sandboxes this process removed


@dataclass
class GateRun:
    """The checks on one commit: green, red, or unable to run (a missing tool, a failed install)."""

    sha: str
    tree: str
    full: bool
    files: int
    commands: list[dict[str, Any]] = field(default_factory=list)
    output: str = ""
    seconds: float = 0.0
    cannot_run: str | None = None
    planned: int = 0  # how many commands were to run (a failure stops the rest)
    quarantined: list[str] = field(default_factory=list)  # known-flaky tests that were the only failures
    timeout_s: float = 0.0  # the run's budget for its commands

    @property
    def passed(self) -> bool:
        return self.cannot_run is None and all(c["exit_code"] == 0 and not c["timed_out"] for c in self.commands)

    @property
    def ok(self) -> bool:
        return self.passed or bool(self.quarantined)

    @property
    def timed_out(self) -> bool:
        return any(c["timed_out"] for c in self.commands)

    @property
    def result(self) -> str:
        return "cannot-run" if self.cannot_run else "green" if self.ok else "red"

    def quarantine(self, known_flaky: set[str]) -> None:
        """Pass a run whose only failures are tests already recorded flaky, in its last command."""
        failing = self.failing_tests()
        last = len(self.commands) == self.planned and self.commands and not self.commands[-1]["timed_out"]
        if not self.passed and self.cannot_run is None and failing and last and set(failing) <= known_flaky:
            self.quarantined = failing

    def failing_tests(self) -> list[str]:
        return failing_tests(self.output)

    def to_dict(self) -> dict[str, Any]:
        """Everything a gate worker reports (JSON), `from_dict`'s input."""
        return {**self.summary(), "output": self.output, "cannot_run": self.cannot_run, "planned": self.planned}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateRun:
        return cls(sha=str(d["sha"]), tree=str(d["tree"]), full=bool(d.get("full")), files=int(d.get("files") or 0),
                   commands=list(d.get("commands") or []), output=str(d.get("output") or ""),
                   seconds=float(d.get("seconds") or 0.0), cannot_run=d.get("cannot_run"),
                   planned=int(d.get("planned") or 0), quarantined=list(d.get("quarantined") or []),
                   timeout_s=float(d.get("timeout_s") or 0.0))

    def summary(self) -> dict[str, Any]:
        return {"sha": self.sha, "tree": self.tree, "full": self.full, "files": self.files, "result": self.result,
                "seconds": self.seconds, "commands": self.commands, "quarantined": self.quarantined,
                "timeout_s": self.timeout_s}


@dataclass(frozen=True)
class GateOptions:
    """What a run checks besides (sha, base): the full commands, quarantine flags, its budget, one command only."""

    full: bool = False  # the full commands, whatever changed
    quarantined: str = ""  # what `{quarantined}` becomes (flags leaving quarantined flaky tests out)
    branches: int = 1  # how many branches the stack under test holds (the budget grows with it)
    only: str | None = None  # run this one command (a GATE_COMMANDS entry) instead of the planned ones


class Watch:
    """Lets another thread stop a gate run: its sandbox is killed, and the run reports nothing."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._sandbox: tuple[LocalSandboxBackend, Any] | None = None

    def attach(self, backend: LocalSandboxBackend, sb: Any) -> None:
        with self._lock:
            self._sandbox = (backend, sb) if sb is not None else None
            stopped = self.stopped.is_set()
        if stopped and sb is not None:
            backend.terminate(sb)

    def stop(self) -> None:
        with self._lock:
            self.stopped.set()
            sandbox = self._sandbox
        if sandbox is not None:
            sandbox[0].terminate(sandbox[1])


def budget_s(settings: Settings, branches: int, full: bool) -> float:
    """A run's time for its commands: GATE_TIMEOUT_BASE_S + GATE_TIMEOUT_PER_BRANCH_S per branch, capped at
    GATE_TIMEOUT_S (which the full commands always get)."""
    if full:
        return float(settings.gate_timeout_s)
    grown = settings.gate_timeout_base_s + settings.gate_timeout_per_branch_s * max(1, branches)
    return float(min(settings.gate_timeout_s, grown))


def run_gate(settings: Settings, sha: str, base: str, options: GateOptions | None = None, *,
             backend: LocalSandboxBackend | None = None, watch: Watch | None = None) -> GateRun:
    """The checks on sha in a sandbox made for this run and removed after it; `base` is the commit it is compared
    with to find the changed files. `watch`: stopped from another thread, the run's sandbox is killed."""
    options = options or GateOptions()
    hub = str(settings.hub_path.resolve())
    files = changed_between(hub, base, sha)
    if options.only is not None:
        commands, full = plan_commands([options.only], [], [], files, quarantined=options.quarantined)
    else:
        commands, full = plan_commands(settings.gate_commands, settings.gate_full_commands, settings.gate_full_paths,
                                       files, force_full=options.full, quarantined=options.quarantined)
    run = GateRun(sha=sha, tree=tree_of(hub, sha), full=full, files=len(files), planned=len(commands),
                  timeout_s=budget_s(settings, options.branches, full))
    started = time.monotonic()
    try:
        _check(settings, backend or check_backend_for(settings), run, commands, watch or Watch())
    except (SandboxError, GitError) as exc:  # the sandbox broke: not the branch's fault, the batch waits
        log.warning("gate sandbox failed on %s", sha[:12], exc_info=True)
        run.cannot_run = f"{SANDBOX_FAILED}: {exc}"
    run.seconds = round(time.monotonic() - started, 2)
    return run


def _check(s: Settings, backend: LocalSandboxBackend, run: GateRun, commands: list[str], watch: Watch) -> None:
    hub = str(s.hub_path.resolve())
    modules, installed = ensure_deps(backend, hub, run.sha, s.gate_install, deps_root(s.hub_path),
                                     s.gate_timeout_s, run_id=GATE_RUN, tsc_snapshot=s.tsc_snapshot)
    if installed is not None and installed.exit_code == REFUSED:  # the tree's own manifests: its red, not ours
        run.commands.append({"command": "dependency policy (git, file, link and URL dependencies are refused)",
                             "exit_code": REFUSED, "duration_s": 0.0, "timed_out": False})
        run.output = installed.output[-OUTPUT_CAP:]
        return
    if installed is not None and not installed.ok:
        run.cannot_run = f"installing the dependencies failed (exit {installed.exit_code})"
        run.output = installed.output[-OUTPUT_CAP:]
        return
    _sweep_once(backend)
    if watch.stopped.is_set():
        run.cannot_run = "stopped"
        return
    sb = checkout(backend, hub, run.sha, f"{os.getpid()}-{run.sha[:12]}-{uuid.uuid4().hex[:8]}", run_id=GATE_RUN)
    watch.attach(backend, sb)
    try:
        if modules is not None:
            attach_deps(backend, sb, modules)
        started = time.monotonic()
        for command in commands:
            left = run.timeout_s - (time.monotonic() - started)
            res = run_in(backend, sb, command, max(1.0, left))
            run.commands.append({"command": command, "exit_code": res.exit_code, "duration_s": res.duration_s,
                                 "timed_out": res.timed_out})
            if watch.stopped.is_set():  # killed from outside: this run reports nothing of its tree
                run.cannot_run = "stopped"
                return
            if res.exit_code == NOT_FOUND:
                run.cannot_run = f"command not found: {command}"
            if not res.ok:
                run.output = f"$ {command}\n{res.output.strip()}"[-OUTPUT_CAP:]
                if res.timed_out:
                    run.output += (f"\n[timed out: the run's budget of {run.timeout_s:.0f}s (GATE_TIMEOUT_BASE_S + "
                                   "GATE_TIMEOUT_PER_BRANCH_S per branch tested, at most GATE_TIMEOUT_S)]")
                return
    finally:
        watch.attach(backend, None)
        backend.terminate(sb)


def _sweep_once(backend: LocalSandboxBackend) -> None:
    """Remove the run sandboxes of gate processes that died mid-run (once per process and sandbox root), and the
    workspace the gate once reused. (Install and snapshot sandboxes have fixed names: their next use removes them.)"""
    if backend.root in _swept:
        return
    _swept.add(backend.root)
    for info in backend.list(GATE_RUN):
        pid = info.task_id.split("-", 1)[0]
        if info.task_id == "workspace" or (pid.isdigit() and not _alive(int(pid))):
            backend.terminate(info.id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def hung_command(settings: Settings, run: GateRun) -> str | None:
    """The GATE_COMMANDS entry whose command timed out in run, if it names the changed files (`{files}`): run
    alone with one branch's files, it shows which branch's tests hang."""
    if not run.timed_out or run.full or run.cannot_run:
        return None
    index = len(run.commands) - 1
    if index >= len(settings.gate_commands):
        return None
    command = settings.gate_commands[index]
    return command if FILES in command else None
