"""One run of a bisection or a confirmation: a fresh sandbox at one sha, the failing commands, read from outside.

Each run clones the hub at its sha into a sandbox nothing ran in before (its own `$HOME`,
`$TMPDIR` and `.git`), binds that commit's dependencies read-only, runs the commands one by one
with `run_in` and removes the sandbox. Runs of one commit may go at once (RECONCILE_PARALLEL_RUNS),
each in a sandbox of its own. The orchestrator keeps nothing of its own in the sandbox (no driver
script, no counter, no log file; only the page check's script, written just before it runs): the
verdict comes from the exit codes it observes and the output it captured from each exec, so
whatever one run's tested code writes reaches no other run and no verdict.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agentswarm.agent.checks import NOT_FOUND
from agentswarm.config import Settings
from agentswarm.git.repo import open_repo
from agentswarm.reconcile.checks import CHECK_RUN
from agentswarm.reconcile.page import PAGE_COMMAND, PAGE_SCRIPT, SCRIPT_PATH, page_command
from agentswarm.sandbox.deps import (
    LOCK_FILES,
    attach_deps,
    checkout,
    deps_root,
    ensure_deps,
    lock_digest,
    run_in,
)
from agentswarm.sandbox.local import LocalSandboxBackend

CANNOT_INSTALL = "-"
NO_DEPS = "none"
STEP_PREFIX = "bisect-"  # the task id of every step's sandbox: only the reconciler (under its lock) makes them


@dataclass
class StepRun:
    """The failing commands once at one sha: how they ended and what they printed."""

    sha: str
    exit_code: int = 0  # of the first command that failed, 0 when all passed
    timed_out: bool = False
    cannot_run: bool = False  # a missing tool (exit 127) or dependencies that would not install
    output: str = ""  # each command's line and output, as the orchestrator captured them

    @property
    def failed(self) -> bool:
        return not self.cannot_run and (self.exit_code != 0 or self.timed_out)

    def shows(self, marks: list[str]) -> list[str]:
        """The marks this run failed with (none when it passed)."""
        return [m for m in marks if m in self.output] if self.failed else []

    def fails_for(self, marks: list[str]) -> bool:
        """Failed with one of the marks; with no marks, failed at all."""
        return bool(self.shows(marks)) if marks else self.failed


def run_steps(backend: LocalSandboxBackend, hub: str, sha: str, commands: list[str], timeout_s: float,
              modules: str, times: int) -> list[StepRun]:
    """`times` runs at sha, each in its own sandbox, all at once: one thread (and one sandbox) per run."""
    if times <= 1:
        return [run_step(backend, hub, sha, commands, timeout_s, modules)]
    with ThreadPoolExecutor(max_workers=times, thread_name_prefix="bisect-step") as pool:
        return list(pool.map(lambda slot: run_step(backend, hub, sha, commands, timeout_s, modules, slot=slot),
                             range(times)))


def run_step(backend: LocalSandboxBackend, hub: str, sha: str, commands: list[str], timeout_s: float,
             modules: str, *, slot: int = 0) -> StepRun:
    """The commands at sha in a fresh sandbox with `modules` (a cache path, NO_DEPS or CANNOT_INSTALL)."""
    if modules == CANNOT_INSTALL:
        return StepRun(sha, cannot_run=True, output=f"the dependencies of {sha} could not be installed")
    out, parts = StepRun(sha), []
    sb = checkout(backend, hub, sha, f"{STEP_PREFIX}{sha[:12]}-{slot}", run_id=CHECK_RUN)
    try:
        if modules != NO_DEPS:
            attach_deps(backend, sb, Path(modules))
        for command in commands:
            if SCRIPT_PATH in command:  # written just before it runs, after the build: as the main check does
                backend.put_file(sb, SCRIPT_PATH, PAGE_SCRIPT.encode())
            res = run_in(backend, sb, command, timeout_s)
            parts.append(f"$ {command}\n{res.output}")
            if not res.ok:
                out.exit_code, out.timed_out = res.exit_code, res.timed_out
                out.cannot_run = res.exit_code == NOT_FOUND
                break
    finally:
        backend.terminate(sb)
    out.output = "\n".join(parts)
    return out


def step_commands(settings: Settings, commands: list[str]) -> list[str]:
    """The failing commands as a run executes them: the page check becomes its script's command line."""
    return [page_command(settings.reconcile_timeout_s) if c == PAGE_COMMAND else c for c in commands]


def sweep_steps(backend: LocalSandboxBackend) -> None:
    """Remove step sandboxes a killed reconciler left behind (one reconciler runs at a time)."""
    for info in backend.list(CHECK_RUN):
        if info.task_id.startswith(STEP_PREFIX):
            backend.terminate(info.id)


def deps_by_commit(backend: LocalSandboxBackend, settings: Settings, hub: str, good: str,
                   shas: list[str]) -> dict[str, str]:
    """For each commit of good..shas[-1]: the node_modules it needs (a cache path), NO_DEPS, or CANNOT_INSTALL.

    The lock digest is computed for each commit that changed a manifest; each distinct one is
    installed once into the shared cache (a sandbox that reaches only the registry).
    """
    install = settings.reconcile_install
    if not install:
        return {sha: NO_DEPS for sha in shas}
    changed = set(open_repo(hub).out("rev-list", "--first-parent", f"{good}..{shas[-1]}", "--",
                                     *LOCK_FILES, "package.json").split())
    digest_at, digest = {}, lock_digest(hub, good)
    for sha in shas:
        if sha in changed:
            digest = lock_digest(hub, sha)
        digest_at[sha] = digest
    modules: dict[str, str] = {}
    for sha, d in digest_at.items():
        if d and d not in modules:
            modules[d] = modules_at(backend, settings, hub, sha)
    return {sha: modules[d] if d else NO_DEPS for sha, d in digest_at.items()}


def modules_at(backend: LocalSandboxBackend, settings: Settings, hub: str, sha: str) -> str:
    """The node_modules sha's checks need: a cache path, NO_DEPS, or CANNOT_INSTALL."""
    if not settings.reconcile_install:
        return NO_DEPS
    path, result = ensure_deps(backend, hub, sha, settings.reconcile_install, deps_root(settings.hub_path),
                               settings.reconcile_timeout_s, run_id=CHECK_RUN, tsc_snapshot=settings.tsc_snapshot)
    if path is not None:
        return str(path)
    return CANNOT_INSTALL if result is not None else NO_DEPS
