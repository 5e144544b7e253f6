"""The gate: the target's checks run on a commit the merge queue is about to land, in a sandbox.

One persistent workspace per merge process: a local sandbox (bubblewrap, no network, no secret)
whose checkout is moved to each commit under test and cleaned, inside the sandbox, and whose
`node_modules` links into the shared dependency cache of the commit's lock file (installed once per
lock file). The orchestrator never runs git in the workspace after it is made: what a tested
branch leaves there (hooks, config, files) is only ever seen by later commands in the same sandbox,
and the reset before each run removes it.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentswarm.agent.checks import CHECK_ENV, NOT_FOUND, failing_tests, plan_commands
from agentswarm.config import Settings
from agentswarm.git.landing import changed_between, tree_of
from agentswarm.sandbox import SandboxError, SandboxHandle
from agentswarm.sandbox.deps import deps_mount, deps_root, ensure_deps, run_in
from agentswarm.sandbox.factory import check_backend_for
from agentswarm.sandbox.local import LocalSandboxBackend

log = logging.getLogger(__name__)
GATE_RUN = "gate"  # the pseudo run id of the gate's sandboxes
OUTPUT_CAP = 8000


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

    @property
    def passed(self) -> bool:
        return self.cannot_run is None and all(c["exit_code"] == 0 and not c["timed_out"] for c in self.commands)

    @property
    def ok(self) -> bool:
        return self.passed or bool(self.quarantined)

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

    def summary(self) -> dict[str, Any]:
        return {"sha": self.sha, "tree": self.tree, "full": self.full, "files": self.files, "result": self.result,
                "seconds": self.seconds, "commands": self.commands, "quarantined": self.quarantined}


class GateWorkspace:
    """Runs the gate's commands on commits of the hub, one at a time, in one reused sandbox."""

    def __init__(self, settings: Settings, backend: LocalSandboxBackend | None = None) -> None:
        self.settings = settings
        self.hub = str(settings.hub_path.resolve())
        self.deps_root = deps_root(settings.hub_path)
        self.backend = backend or check_backend_for(settings)
        self.sb: SandboxHandle | None = None
        self.bound: set[str] = set()

    def _sandbox(self) -> SandboxHandle:
        if self.sb is not None and Path(self.sb.workdir).is_dir():
            return self.sb
        name = "workspace"
        try:
            self.backend.terminate(f"{GATE_RUN}/{name}-a1")  # left by a merge process that died mid-run
        except (SandboxError, ValueError):
            pass
        sb = self.backend.create(run_id=GATE_RUN, task_id=name, attempt=1, env=dict(CHECK_ENV))
        self.backend.prepare_repo(sb, self.hub)
        self.sb, self.bound = sb, set()
        return sb

    def close(self) -> None:
        if self.sb is not None:
            self.backend.terminate(self.sb)
            self.sb = None

    def run(self, sha: str, base: str, *, full: bool = False, quarantined: str = "") -> GateRun:
        """The checks on sha; `base` is the commit it is compared with to find the changed files.

        `quarantined`: what `{quarantined}` becomes in the commands (flags leaving flaky tests out).
        """
        s = self.settings
        files = changed_between(self.hub, base, sha)
        commands, full = plan_commands(s.gate_commands, s.gate_full_commands, s.gate_full_paths, files,
                                       force_full=full, quarantined=quarantined)
        run = GateRun(sha=sha, tree=tree_of(self.hub, sha), full=full, files=len(files), planned=len(commands))
        started = time.monotonic()
        try:
            self._check(run, sha, commands, started)
        except SandboxError as exc:  # the sandbox broke: not the branch's fault, the batch waits
            log.warning("gate sandbox failed on %s", sha[:12], exc_info=True)
            run.cannot_run = f"the gate's sandbox failed: {exc}"
            self.close()
        run.seconds = round(time.monotonic() - started, 2)
        return run

    def _check(self, run: GateRun, sha: str, commands: list[str], started: float) -> None:
        s = self.settings
        modules, installed = ensure_deps(self.backend, self.hub, sha, s.gate_install, self.deps_root,
                                         s.gate_timeout_s, run_id=GATE_RUN, tsc_snapshot=s.tsc_snapshot)
        if installed is not None and not installed.ok:
            run.cannot_run = f"installing the dependencies failed (exit {installed.exit_code})"
            run.output = installed.output[-OUTPUT_CAP:]
            return
        sb = self._sandbox()
        if modules is not None and deps_mount(modules) not in self.bound:
            self.backend.add_readonly(sb, deps_mount(modules))
            self.bound.add(deps_mount(modules))
        reset = run_in(self.backend, sb, _reset_script(sha, modules), 120)
        if not reset.ok:
            self.close()
            run.cannot_run = f"the gate's workspace could not check out {sha[:12]}: {reset.output[-500:]}"
            return
        for command in commands:
            left = s.gate_timeout_s - (time.monotonic() - started)
            res = run_in(self.backend, sb, command, max(1.0, left))
            run.commands.append({"command": command, "exit_code": res.exit_code, "duration_s": res.duration_s,
                                 "timed_out": res.timed_out})
            if res.exit_code == NOT_FOUND:
                run.cannot_run = f"command not found: {command}"
            if not res.ok:
                run.output = f"$ {command}\n{res.output.strip()}"[-OUTPUT_CAP:]
                if res.timed_out:
                    run.output += f"\n[timed out: GATE_TIMEOUT_S={s.gate_timeout_s}]"
                return


def _reset_script(sha: str, modules: Path | None) -> str:
    """Inside the sandbox: the checkout at sha, nothing else left, node_modules relinked to the cache."""
    steps = [f"git checkout --quiet --force --detach {shlex.quote(sha)}", "git clean -ffdxq"]
    if modules is not None:
        m = shlex.quote(str(modules))
        steps += ["mkdir node_modules",
                  f'for e in {m}/* {m}/.[!.]*; do [ -e "$e" ] && ln -s "$e" node_modules/; done; true']
    return " && ".join(steps)
