"""Which commit of main broke it: a bisection the orchestrator drives, one fresh sandbox per run.

Between the last sha the reconciler saw green and the red one, the search walks main's own
first-parent history (each landing, not the commits inside a merged branch). The orchestrator
picks each step's commit and runs the failing checks there in a sandbox of its own
(`reconcile.steps`): a clone at that sha, its dependencies bound read-only, the verdict from
the exit codes and output the orchestrator observes. Nothing of the search lives in a tested
sandbox, so a commit's code cannot rewrite a later step or the record of an earlier one.

A step is good, bad, or skipped (a missing tool, exit 127, or dependencies that would not
install: the break may be in any skipped commit next to it). At most RECONCILE_BISECT_MAX_STEPS
steps per search. With several breaks on main, each step looks for this red's own failure (its
failing tests, the files tsc errs in: `signatures`) and calls a commit that fails some other way
good for this search. A step that looks for failing tests runs them RECONCILE_BISECT_RUNS
times: bad if any run fails with a signature, and a test that fails in one run and passes in
another on the same tree is flaky: it is dropped from the search (`Bisection.flaky`), never blamed.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from agentswarm.agent.checks import failing_tests
from agentswarm.config import Settings
from agentswarm.git.repo import open_repo
from agentswarm.reconcile.steps import StepRun, deps_by_commit, run_steps, step_commands, sweep_steps
from agentswarm.sandbox.factory import check_backend_for
from agentswarm.sandbox.local import LocalSandboxBackend

_TSC_ERROR = re.compile(r"^\s*(\S+\.(?:ts|tsx|mts|cts))\(\d+,\d+\): error TS\d+", re.M)
_VITEST_RUN = re.compile(r"(^|[\s/])vitest\s+run(\s|$)")  # `vitest run ...` (not related, not watch)
LOG_CAP = 20_000


@dataclass
class Bisection:
    """The outcome of one bisection: the first bad commit, or why none was found."""

    good: str
    bad: str
    first_bad: str | None = None
    steps: int = 0
    reason: str = ""  # why it is inconclusive
    candidates: list[str] = field(default_factory=list)  # skipped commits the break may be in
    output: str = ""  # the failing checks' output at the first bad commit
    marks: list[str] = field(default_factory=list)  # the red's marks this break explains
    flaky: list[str] = field(default_factory=list)  # marks that failed in one run and passed in another of a tree
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"good": self.good, "bad": self.bad, "first_bad": self.first_bad, "steps": self.steps,
                "reason": self.reason, "candidates": self.candidates, "marks": self.marks[:20],
                "flaky": self.flaky[:20], "seconds": self.seconds}


def signatures(output: str) -> list[str]:
    """What identifies this red in a check's output: the failing tests' names, and the files tsc errs in.

    A bisection step with signatures calls a commit bad only when its failure shows one of them, so
    an earlier break that is already reverted (or a different one) does not hide the break at hand.
    A red without any (a failing build, the page) is bisected on the failure alone.
    """
    return list(dict.fromkeys([*failing_tests(output), *tsc_error_files(output)]))


def narrowed(commands: list[str], marks: list[str]) -> list[str]:
    """The failing commands as each bisection step runs them: a vitest run only over the failing tests' files.

    A step then costs the few test files this red is about, not the whole suite (tens of seconds on a
    loaded two-core machine). `--passWithNoTests`: at a commit before a test file existed, vitest finds
    nothing and says so, which the signatures already treat as good.
    """
    files = sorted({m.split(" > ", 1)[0] for m in marks if " > " in m})
    if not files:
        return list(commands)
    quoted = " ".join(shlex.quote(f) for f in files)
    return [f"{c} --passWithNoTests {quoted}" if _VITEST_RUN.search(c) else c for c in commands]


def tsc_error_files(output: str) -> list[str]:
    """`path(` for each file tsc reports an error in: how its error lines start, whatever the line moved to."""
    return list(dict.fromkeys(f"{m.group(1)}(" for m in _TSC_ERROR.finditer(output)))


def is_test_mark(mark: str) -> bool:
    """A failing test's name (not a file tsc errs in): what may be flaky and run more than once."""
    return not mark.endswith("(")


def flaky_marks(runs: list[StepRun], marks: list[str]) -> list[str]:
    """The marks some runs of one tree failed with and others did not."""
    ran = [r for r in runs if not r.cannot_run]
    return [m for m in marks if 0 < sum(bool(r.shows([m])) for r in ran) < len(ran)]


def find_first_bad(settings: Settings, good: str, bad: str, commands: list[str], *,
                   marks: list[str] | None = None) -> Bisection:
    """The first bad commit of good..bad for `commands` (see `find_culprits`)."""
    return find_culprits(settings, good, bad, commands, marks=marks, most=1)[0]


def find_culprits(settings: Settings, good: str, bad: str, commands: list[str], *,
                  marks: list[str] | None = None, most: int = 5) -> list[Bisection]:
    """Bisect good..bad (main's first-parent history) with `commands`, once per break; never raises for a failed check.

    `marks`: what identifies the red at `bad` in a check's output (`signatures`); a step whose failure
    shows none of them is good for the search. None or []: any failure is bad, one search. With marks,
    the marks the first bad commit's output shows are its break; the rest are searched for again from
    there (it is good for them), up to `most` searches; the steps already run are judged again, not
    run again: several breaks on main are found in one tick.
    """
    hub = str(settings.hub_path.resolve())
    shas = open_repo(hub).out("rev-list", "--first-parent", "--reverse", f"{good}..{bad}").split()
    if not shas:
        return [Bisection(good=good, bad=bad, reason=f"{bad[:12]} does not descend from {good[:12]}")]
    if len(shas) == 1:  # one landing between green and red: it is the culprit (its output is the red check's)
        return [Bisection(good=good, bad=bad, first_bad=shas[0], marks=list(marks or []))]
    backend = check_backend_for(settings)
    sweep_steps(backend)
    search = _Search(settings, backend, hub, good, shas, step_commands(settings, commands))
    found: list[Bisection] = []
    left, lo = list(marks or []), -1
    while len(found) < most:
        bis = search.find(lo, left)
        found.append(bis)
        left = [m for m in left if m not in bis.flaky]
        if not bis.first_bad or not left or bis.first_bad == bad:
            break
        bis.marks = [m for m in left if m in bis.output]
        left = [m for m in left if m not in bis.marks]
        if not bis.marks or not left:
            break
        lo = shas.index(bis.first_bad)  # good for the marks still unexplained
    return found


class _Search:
    """The steps of one range, each run once and kept: a later search judges them again for its own marks."""

    def __init__(self, settings: Settings, backend: LocalSandboxBackend, hub: str, good: str, shas: list[str],
                 commands: list[str]):
        self.settings, self.backend, self.hub, self.good, self.shas = settings, backend, hub, good, shas
        self.commands = commands
        self.deps = deps_by_commit(backend, settings, hub, good, shas)
        self.runs: dict[int, list[StepRun]] = {}

    def find(self, lo: int, marks: list[str]) -> Bisection:
        """The first bad commit after index lo for marks (any failure without), or why there is none."""
        started = time.monotonic()
        out = Bisection(good=self.shas[lo] if lo >= 0 else self.good, bad=self.shas[-1], marks=list(marks))
        wanted = list(marks)
        while not self._walk(out, lo, wanted):  # a mark turned out flaky: judge the steps again without it
            wanted = [m for m in wanted if m not in out.flaky]
            if not wanted:
                out.reason = f"every failure searched for is flaky: {', '.join(out.flaky[:3])}"
                break
        out.marks = [m for m in out.marks if m not in out.flaky]
        out.seconds = round(time.monotonic() - started, 2)
        return out

    def _walk(self, out: Bisection, lo: int, marks: list[str]) -> bool:
        """Bisect (lo, last]; False when a mark was found flaky and the walk must start again."""
        hi, cap = len(self.shas) - 1, self.settings.reconcile_bisect_max_steps
        skipped: set[int] = set()
        while hi - lo > 1:
            idx = _pick(lo, hi, skipped)
            if idx is None:
                out.candidates = self.shas[lo + 1:hi + 1]
                out.reason = f"the break is in one of {len(out.candidates)} commits whose checks could not run"
                return True
            if idx not in self.runs:
                if out.steps >= cap:
                    out.reason = f"more than RECONCILE_BISECT_MAX_STEPS={cap} steps were needed"
                    return True
                out.steps += 1
                self.runs[idx] = self._run(idx, marks)
            runs = self.runs[idx]
            if any(r.cannot_run for r in runs):
                skipped.add(idx)
                continue
            flaky = flaky_marks(runs, marks)
            if flaky:
                out.flaky.extend(m for m in flaky if m not in out.flaky)
                return False
            if any(r.fails_for(marks) for r in runs):
                hi = idx
            else:
                lo = idx
        out.first_bad = self.shas[hi]
        failing = next((r for r in self.runs.get(hi, []) if r.fails_for(marks)), None)
        out.output = failing.output[-LOG_CAP:] if failing else ""
        return True

    def _run(self, idx: int, marks: list[str]) -> list[StepRun]:
        """The commands at one commit: RECONCILE_BISECT_RUNS times when failing tests are looked for."""
        sha, runs, s = self.shas[idx], list[StepRun](), self.settings
        times = s.reconcile_bisect_runs if any(is_test_mark(m) for m in marks) else 1
        while len(runs) < times and not any(r.cannot_run for r in runs):
            runs += run_steps(self.backend, self.hub, sha, self.commands, s.reconcile_timeout_s, self.deps[sha],
                              min(s.reconcile_parallel_runs, times - len(runs)))
        return runs


def _pick(lo: int, hi: int, skipped: set[int]) -> int | None:
    """The commit to test next: the middle of (lo, hi), or the nearest one not skipped."""
    mid = (lo + hi) // 2
    return min((i for i in range(lo + 1, hi) if i not in skipped), key=lambda i: (abs(i - mid), i), default=None)
