"""Before a revert, the blame must reproduce: on the blamed commit every time, on its parent never.

A bisection of a flaky failure can name any commit after the test's own landing (or before a
test's first run here). So the first bad commit and its first parent each run the failing
commands RECONCILE_CONFIRM_RUNS times, each run in a fresh sandbox (`reconcile.steps`), read
from outside. A mark (a failing test, a file tsc errs in) is confirmed when every run on the
commit failed with it and no run on the parent did; without marks (a failed build), when every
run on the commit failed and none on the parent. An unconfirmed failing test failed on one run
and passed on another of a tree this check ran (here, in the bisection, or the red check
itself): it is flaky, to be observed, never reverted for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentswarm.config import Settings
from agentswarm.git.repo import open_repo
from agentswarm.reconcile.bisect import LOG_CAP, Bisection, is_test_mark
from agentswarm.reconcile.steps import StepRun, modules_at, run_steps, step_commands, sweep_steps
from agentswarm.sandbox.factory import check_backend_for


@dataclass
class Confirmation:
    """Whether a bisection's first bad commit is the break: the marks confirmed, the flaky ones, or why not."""

    sha: str
    parent: str = ""
    ok: bool = False
    marks: list[str] = field(default_factory=list)  # confirmed: failed on the commit each run, never on the parent
    flaky: list[str] = field(default_factory=list)  # failing tests that passed on a run of a tree they failed on
    reason: str = ""  # why the blame is not confirmed
    output: str = ""  # a run on the commit that failed with the confirmed marks
    runs: int = 0

    def summary(self) -> dict[str, Any]:
        return {"sha": self.sha, "parent": self.parent, "ok": self.ok, "marks": self.marks[:20],
                "flaky": self.flaky[:20], "reason": self.reason, "runs": self.runs}


def confirm(settings: Settings, bis: Bisection, commands: list[str]) -> Confirmation:
    """Run `commands` on bis.first_bad and on its parent, RECONCILE_CONFIRM_RUNS times each, and judge the blame."""
    assert bis.first_bad is not None
    sha, hub = bis.first_bad, str(settings.hub_path.resolve())
    out = Confirmation(sha, parent=open_repo(hub).out("rev-parse", f"{sha}^1").strip())
    backend = check_backend_for(settings)
    sweep_steps(backend)
    cmds, times = step_commands(settings, commands), settings.reconcile_confirm_runs

    def runs_at(commit: str, keep_going: Callable[[list[StepRun]], bool]) -> list[StepRun]:
        modules, runs = modules_at(backend, settings, hub, commit), list[StepRun]()
        while len(runs) < times and keep_going(runs):
            batch = min(settings.reconcile_parallel_runs, times - len(runs))
            runs += run_steps(backend, hub, commit, cmds, settings.reconcile_timeout_s, modules, batch)
            out.runs += batch
        return runs

    marks = list(bis.marks) or [""]  # "": any failure, for a red without marks (a failed build)

    def every(runs: list[StepRun]) -> list[str]:
        return [m for m in marks if all(r.shows([m]) for r in runs)]

    on_sha = runs_at(sha, lambda rs: _ran(rs) and bool(every(rs)))
    kept = every(on_sha) if _ran(on_sha) else []
    on_parent = runs_at(out.parent, lambda rs: _ran(rs) and any(not _any(rs, m) for m in kept)) if kept else []
    if not _ran(on_sha + on_parent):
        out.reason = f"the checks could not run on {sha[:10]} or its parent to confirm the blame"
        return out
    confirmed = [m for m in kept if not _any(on_parent, m)]
    out.ok, out.marks = bool(confirmed), [m for m in confirmed if m]
    out.flaky = [m for m in marks if m and m not in confirmed and is_test_mark(m)]
    failing = next((r for r in on_sha if r.fails_for(out.marks)), None)
    out.output = failing.output[-LOG_CAP:] if failing else ""
    if not out.ok:
        where = "on its parent too" if kept else "not every time on it"
        out.reason = f"the blame on {sha[:10]} did not reproduce ({where}, {out.runs} runs)"
    return out


def _ran(runs: list[StepRun]) -> bool:
    return not any(r.cannot_run for r in runs)


def _any(runs: list[StepRun], mark: str) -> bool:
    """Some run failed with mark ("": failed at all)."""
    return any(r.shows([mark]) for r in runs)
