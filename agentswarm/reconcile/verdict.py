"""What a check of main says: green, red, or that it could not run; and which failures are tolerated.

A run whose only failures are quarantined flaky tests is green (the tests are reported, not
hidden). A missing tool (exit 127) or a failed install is "cannot-run": the machine's problem,
not main's, so nothing is reverted and no fix task is asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agentswarm.agent.checks import NOT_FOUND, failing_tests
from agentswarm.reconcile.checks import CheckResult, MainRun

GREEN, RED, CANNOT_RUN = "green", "red", "cannot-run"
OUTPUT_CAP = 30_000
_SUITE_SUMMARY = re.compile(r"^\s*Test Files\s", re.M)  # vitest ran to its summary


@dataclass
class Verdict:
    result: str
    failed: list[CheckResult] = field(default_factory=list)  # failing checks that count (not tolerated)
    failing_tests: list[str] = field(default_factory=list)
    tolerated: list[str] = field(default_factory=list)  # quarantined tests that failed; main still green
    reason: str = ""  # why it could not run
    suite_ran: bool = False  # a test suite ran to its summary: quarantined tests not failing passed

    @property
    def green(self) -> bool:
        return self.result == GREEN

    def report(self) -> str:
        """The failing checks' output, capped (the reconciler's prompt, a reopened task's context)."""
        parts = []
        for r in self.failed:
            why = "timed out" if r.timed_out else f"exit {r.exit_code}"
            parts.append(f"$ {r.command}  ({why})\n{r.output.strip()}")
        return "\n\n".join(parts)[-OUTPUT_CAP:]

    def test_only(self) -> bool:
        """Every counted failure is a test run that named its failing tests (a flake is possible)."""
        return bool(self.failed) and all(not r.timed_out and failing_tests(r.output) for r in self.failed)


def judge(run: MainRun, quarantined: set[str]) -> Verdict:
    """The verdict on one run of the checks, given the tests under quarantine."""
    if run.install is not None and not run.install.ok:
        return Verdict(CANNOT_RUN, failed=[run.install],
                       reason=f"installing the dependencies failed (exit {run.install.exit_code})")
    failed = [r for r in run.results if not r.ok]
    suite_ran = any(_SUITE_SUMMARY.search(r.output) for r in run.results)
    missing = next((r for r in failed if r.exit_code == NOT_FOUND), None)
    if missing is not None:
        return Verdict(CANNOT_RUN, failed=[missing], reason=f"command not found: {missing.command}")
    tests = [t for r in failed for t in failing_tests(r.output)]
    counted = [r for r in failed if r.timed_out or not failing_tests(r.output)
               or not set(failing_tests(r.output)) <= quarantined]
    if not counted:
        return Verdict(GREEN, tolerated=tests, suite_ran=suite_ran)
    return Verdict(RED, failed=counted, failing_tests=[t for t in tests if t not in quarantined],
                   tolerated=[t for t in tests if t in quarantined], suite_ran=suite_ran)
