"""From a red main to reverts: bisect once per break, confirm each blame, revert each confirmed culprit's landing.

The bisection runs from the newest green ancestor of the red sha (or the run's starting main,
checked first) with the failing commands, once per break (`reconcile.bisect.find_culprits`).
Failures a revert on its way already accounts for are left out, and so are tests with a flaky
history (observed or quarantined: their red proves no break). Each first bad commit is confirmed
(`reconcile.confirm`: it fails every run, its parent none) before the task whose landing holds
it is found and a revert of that landing is handed to the merge queue (`reconcile.revert`).
Tests found flaky on the way are observed (`lifecycle.flaky`); a red made only of flaky tests
ends there (action "flaky"): nothing is reverted and no fix task is asked for. Whatever else
stops a revert is returned as `{"why": ...}` for the caller's fallback (fix tasks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import MainCheck, MergeAttempt, MergeStatus, Run, Task, TaskKind, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.git.landing import tree_of
from agentswarm.git.refs import is_ancestor
from agentswarm.lifecycle.feedback import gate_feedback
from agentswarm.lifecycle.flaky import flaky_names, observe
from agentswarm.queue.names import RECONCILE_TICK
from agentswarm.queue.send import tick_after_commit
from agentswarm.reconcile.bisect import Bisection, find_culprits, is_test_mark, narrowed
from agentswarm.reconcile.checks import check_main
from agentswarm.reconcile.confirm import Confirmation, confirm
from agentswarm.reconcile.page import PAGE_COMMAND
from agentswarm.reconcile.revert import culprit_of, make_revert, open_revert
from agentswarm.reconcile.verdict import CANNOT_RUN, GREEN, judge


@dataclass
class RedMain:
    """What the action on a red main needs, read back from its stored check."""

    check_id: int
    run_id: str
    sha: str
    commands: list[str]  # the checks that failed
    output: str
    test_only: bool
    marks: list[str]  # what identifies this red in a check's output (see reconcile.bisect.signatures)



def _good_bound(settings: Settings, red: RedMain, marks: list[str]) -> tuple[str | None, str]:
    """The newest sha known green that main descends from (or the run's start, checked now: good when none of
    the marks fail there, or with no marks when it is green); or why none."""
    hub = str(settings.hub_path.resolve())
    with session_scope(settings.database_url) as db:
        greens = list(db.scalars(select(MainCheck.sha).where(MainCheck.result == GREEN)
                                 .order_by(MainCheck.finished_at.desc()).limit(50)))
        run = db.get(Run, red.run_id)
        start = (run.config or {}).get("main_at_start") if run else None
    for sha in greens:
        if sha != red.sha and is_ancestor(hub, sha, red.sha):
            return sha, ""
    if not start or start == red.sha or not is_ancestor(hub, start, red.sha):
        return None, "no green main to bisect from"
    commands = [c for c in narrowed(red.commands, marks) if c != PAGE_COMMAND]
    verdict = judge(check_main(settings, start, commands, page=PAGE_COMMAND in red.commands), set())
    if verdict.result == CANNOT_RUN:
        return None, f"the checks cannot run at the run's start ({start[:10]}): {verdict.reason}"
    if any(m in r.output for m in marks for r in verdict.failed) if marks else not verdict.green:
        return None, f"main was already red at the run's start ({start[:10]})"
    return start, ""


def revert_red(settings: Settings, red: RedMain) -> dict[str, Any]:
    """Bisect once per break, confirm each blame, and hand a revert of each confirmed culprit's landing to the
    merge queue; or say why not. Failing tests with a flaky history are not searched for; tests found flaky
    on the way are observed."""
    marks, waiting = _unexplained(settings, red)
    if red.marks and not marks:  # every failure is one a revert on its way will remove
        with session_scope(settings.database_url) as db:
            check = db.get(MainCheck, red.check_id)
            assert check is not None
            check.action, check.revert_task_id = "revert", waiting[0]
            return {"revert": waiting[0], "note": "every failure is explained by a revert on its way"}
    with session_scope(settings.database_url) as db:
        known = flaky_names(db)
    searched = [m for m in marks if m not in known]
    if marks and not searched:
        return _flaky_red(settings, red, marks, "only tests with a flaky history fail: nothing to bisect for")
    good, why = _good_bound(settings, red, searched)
    searches = (find_culprits(settings, good, red.sha, narrowed(red.commands, searched), marks=searched) if good
                else [Bisection(good="", bad=red.sha, reason=why)])
    blames = [(b, confirm(settings, b, narrowed(red.commands, b.marks))) for b in searches if b.first_bad]
    flaky = list(dict.fromkeys(m for m in [*(m for m in marks if m in known), *(m for b in searches for m in b.flaky),
                                           *(m for _, c in blames for m in c.flaky)] if is_test_mark(m)))
    with session_scope(settings.database_url) as db:
        check = db.get(MainCheck, red.check_id)
        assert check is not None
        if flaky:
            observe(db, flaky, source="reconciler", tree=tree_of(settings.hub_path, red.sha), run_id=red.run_id,
                    settings=settings, output=red.output)
        outcomes = [_revert_one(db, settings, check, red, _confirmed(b, c)) if c.ok else {"why": c.reason}
                    for b, c in blames]
        done = [o for o in outcomes if "revert" in o]
        check.bisect = {"good": good, "bad": red.sha, "searches": [b.summary() for b in searches],
                        "steps": sum(b.steps for b in searches), "culprits": done,
                        "confirmations": [c.summary() for _, c in blames], "flaky": flaky,
                        "reason": "" if done else next((o["why"] for o in outcomes), searches[-1].reason)}
        if not done and marks and set(marks) <= set(flaky):  # every failure is a flaky test: nothing to fix here
            return _flaky_outcome(db, check, flaky, check.bisect["reason"] or "flaky tests")
        if not done:
            check.culprit_sha = next((c.sha for _, c in blames if c.ok), None)
            return {**_no_revert(db, check, check.bisect["reason"]), "flaky": flaky}
        check.action = "revert"
        check.culprit_sha, check.culprit_task_id = done[0]["first_bad"], done[0]["culprit"]
        check.revert_task_id = done[0]["revert"]
        return {"revert": done[0]["revert"], "culprit": done[0]["culprit"], "reverts": done,
                "steps": check.bisect["steps"], "flaky": flaky}


def _confirmed(bis: Bisection, conf: Confirmation) -> Bisection:
    """The bisection as its confirmation saw it: the marks that reproduced, and a run's output that shows them."""
    bis.marks = conf.marks or bis.marks
    bis.output = conf.output or bis.output
    return bis


def _flaky_red(settings: Settings, red: RedMain, tests: list[str], why: str) -> dict[str, Any]:
    """A red made only of tests known to be flaky: observed once more (quarantine comes at the threshold)."""
    with session_scope(settings.database_url) as db:
        check = db.get(MainCheck, red.check_id)
        assert check is not None
        observe(db, tests, source="reconciler", tree=tree_of(settings.hub_path, red.sha), run_id=red.run_id,
                settings=settings, output=red.output)
        check.bisect = {"good": None, "bad": red.sha, "searches": [], "steps": 0, "culprits": [], "flaky": tests,
                        "reason": why}
        return _flaky_outcome(db, check, tests, why)


def _flaky_outcome(db: Session, check: MainCheck, tests: list[str], why: str) -> dict[str, Any]:
    check.action = "flaky"
    record_event(db, "reconcile.flaky", f"main {check.sha[:10]}: {why}; observed flaky: {', '.join(tests)[:300]}",
                 run_id=check.run_id, check_id=check.id, tests=tests[:20])
    return {"action": "flaky", "flaky": tests, "why": why}


def _unexplained(settings: Settings, red: RedMain) -> tuple[list[str], list[str]]:
    """The red's marks no revert on its way accounts for, and those reverts' task ids."""
    with session_scope(settings.database_url) as db:
        landed = select(MergeAttempt.task_id).where(MergeAttempt.status == MergeStatus.merged)
        pending = list(db.scalars(select(Task).where(Task.run_id == red.run_id, Task.kind == TaskKind.revert,
                                                     Task.status == TaskStatus.complete, Task.id.not_in(landed))))
        explained = {m for t in pending for m in ((t.context or {}).get("revert") or {}).get("marks") or []}
        return [m for m in red.marks if m not in explained], [t.id for t in pending]


def _revert_one(db: Session, settings: Settings, check: MainCheck, red: RedMain, bis: Bisection) -> dict[str, Any]:
    """A revert for the landing that holds this search's first bad commit: {"revert": id, ...}, or {"why": ...}."""
    assert bis.first_bad is not None
    culprit = culprit_of(db, bis.first_bad)
    if culprit is None:
        return {"why": f"no task's landing holds {bis.first_bad[:10]}"}
    base = {"first_bad": bis.first_bad, "culprit": culprit.task.id}
    if culprit.landing.status is MergeStatus.reverted:  # its revert landed while this check ran: done already
        tick_after_commit(db, RECONCILE_TICK)  # the newer main is what to check now
        return {**base, "revert": None, "note": "already reverted on a newer main"}
    pending = open_revert(db, culprit.task.id)
    if pending is not None:
        return {**base, "revert": pending.id, "note": "a revert is already on its way"}
    failed_before = db.scalar(select(Task.id).where(Task.kind == TaskKind.revert, Task.origin_id == culprit.task.id,
                                                    Task.status == TaskStatus.failed).limit(1))
    if failed_before:
        return {"why": f"a revert of {culprit.task.branch} failed before ({failed_before})"}
    feedback = gate_feedback("reconciler", bis.output or red.output, main=red.sha, commands=red.commands)
    revert = make_revert(db, settings, culprit, red.sha, culprit_sha=bis.first_bad, feedback=feedback,
                         check_id=check.id, why=", ".join(red.commands)[:200] or "the checks failed", marks=bis.marks)
    if isinstance(revert, str):
        return {"why": revert}
    return {**base, "revert": revert.id}


def _no_revert(db: Session, check: MainCheck, why: str) -> dict[str, Any]:
    record_event(db, "reconcile.no_revert", f"main {check.sha[:10]}: {why}; asking for fix tasks instead",
                 run_id=check.run_id, check_id=check.id)
    return {"why": why}
