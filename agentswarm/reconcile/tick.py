"""The reconcile tick: run the slow checks on main; when it is red, find the commit, revert it, reopen its task.

Each sha of main is checked once per run (or again on demand), and the check is stored
(`MainCheck`): the verdict, every command's result, the failing tests, the quarantined ones
tolerated. A red made only of failing tests is checked once more on the same tree; passing then,
the tests are observed flaky (`lifecycle.flaky`) and main counts as green.

Red, with RECONCILE_ON_RED=revert (the default): `reconcile.blame` bisects from the last green
ancestor once per break, confirms each blame (on the commit every run, on its parent never) and
hands a revert of each confirmed culprit's landing to the merge queue; its landing reopens the
task with the output. Tests with a flaky history, or found flaky on the way, are observed and
never reverted for; a red made only of them asks for nothing more. Where a revert cannot be done
(no green ancestor, an inconclusive bisection, a blame that did not reproduce, a commit no task
landed, a revert that conflicts or failed before), and with RECONCILE_ON_RED=fix: a few urgent
fix tasks from the model, deduplicated against fix tasks still open, at most
RECONCILE_MAX_FIX_TASKS at a time.

The tick holds the reconcile lock (one reconciler at a time) on a connection of its own and
commits each step, so no row stays locked while checks run. Safe twice: a check stored for this
sha ends the tick, and a red check whose action is still to be taken (the model failed) is acted
on without checking again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.agent.checks import failing_tests
from agentswarm.config import RedAction, Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.locks import try_held_lock
from agentswarm.db.models import Feature, MainCheck, Run, RunStatus, Task, TaskKind
from agentswarm.db.session import session_scope
from agentswarm.db.states import OPEN
from agentswarm.db.text import stored_text
from agentswarm.git.hub import main_sha
from agentswarm.git.landing import tree_of
from agentswarm.lifecycle.budgets import tasks_left
from agentswarm.lifecycle.dispatch import dispatch_pending, scopes_overlap
from agentswarm.lifecycle.flaky import note_runs, observe, quarantined_names
from agentswarm.llm import ChatClient
from agentswarm.llm.factory import client_from_settings
from agentswarm.planning.calls import ask, record
from agentswarm.planning.parsing import UnparseableReply, parse_tasks
from agentswarm.planning.repo_state import read_main
from agentswarm.planning.store import record_rejections, store_task
from agentswarm.prompts import render_messages
from agentswarm.reconcile.bisect import tsc_error_files
from agentswarm.reconcile.blame import RedMain, revert_red
from agentswarm.reconcile.checks import MainRun, check_main
from agentswarm.reconcile.page import PAGE_COMMAND, save_screenshot, screenshots_root
from agentswarm.reconcile.previews import discard, keep_preview, previews_root
from agentswarm.reconcile.verdict import CANNOT_RUN, GREEN, RED, Verdict, judge

log = logging.getLogger(__name__)
FIX_PRIORITY = 1


def failure_report(results: list) -> str:
    """The failing commands' output, capped, for the reconciler prompt."""
    return Verdict(RED, failed=[r for r in results if not r.ok]).report()


def reconcile_tick(settings: Settings | None = None, client: ChatClient | None = None, *,
                   force: bool = False) -> dict[str, Any]:
    """Check main once per new sha (again with `force`); act on a red one."""
    settings = settings or get_settings()
    with try_held_lock("reconcile", settings.database_url) as got:
        if not got:
            return {"skipped": "another reconciler holds the lock"}
        return _tick(settings, client, force)


def _tick(settings: Settings, client: ChatClient | None, force: bool) -> dict[str, Any]:
    with session_scope(settings.database_url) as db:
        run = db.scalars(select(Run).where(Run.status == RunStatus.active).order_by(Run.started_at.desc())).first()
        if run is None:
            return {"skipped": "no active run"}
        sha = main_sha(settings.hub_path)
        if sha is None:
            return {"skipped": f"the hub at {settings.hub_path.resolve()} has no main"}
        if not settings.reconcile_commands:
            return {"skipped": "RECONCILE_COMMANDS is empty: nothing to check"}
        run_id, quarantined = run.id, quarantined_names(db)
        done = None if force else _latest(db, run_id, sha)
        if done is not None and (done.result != RED or done.action):
            return {"skipped": f"main {sha[:10]} already checked ({done.result})", "sha": sha, "green": done.result == GREEN}
        red = _red_main(done) if done is not None else None
    if red is None:
        outcome = _check(settings, run_id, sha, quarantined)
        if outcome["result"] != RED:
            return outcome
        red = outcome.pop("red")
    return {"sha": sha, "green": False, **_act(settings, client, red)}


def _latest(db: Session, run_id: str, sha: str) -> MainCheck | None:
    return db.scalars(select(MainCheck).where(MainCheck.run_id == run_id, MainCheck.sha == sha)
                      .order_by(MainCheck.id.desc()).limit(1)).first()


def _red_main(check: MainCheck) -> RedMain:
    """The failing checks of a stored red check: what bisection runs (a failing page needs the build first)."""
    rows = [c for c in check.checks or [] if c.get("kind") != "install"]
    failed = [c for c in rows if c.get("exit_code") != 0 or c.get("timed_out")]
    if any(c.get("kind") == "page" for c in failed):
        commands = [str(c["command"]) for c in rows if c.get("kind") == "command"] + [PAGE_COMMAND]
    else:
        commands = [str(c["command"]) for c in failed]
    return RedMain(check.id, str(check.run_id), check.sha, commands, check.output,
                   test_only=bool(failed) and all(c.get("tests") for c in failed),
                   marks=list(dict.fromkeys([*check.failing_tests, *tsc_error_files(check.output)])))


# -- checking --------------------------------------------------------------------------------------


def _check(settings: Settings, run_id: str, sha: str, quarantined: set[str]) -> dict[str, Any]:
    """Run the checks on sha, judge them (once more for a red of failing tests), and store the check."""
    started = datetime.now(UTC)
    main_run = check_main(settings, sha, keep_dist=True)
    try:
        return _judge_and_store(settings, run_id, sha, quarantined, started, main_run)
    finally:
        if main_run.dist is not None:
            discard(main_run.dist)  # kept (moved into place) only on green


def _judge_and_store(settings: Settings, run_id: str, sha: str, quarantined: set[str], started: datetime,
                     main_run: MainRun) -> dict[str, Any]:
    verdict = judge(main_run, quarantined)
    failed_tests = [t for r in main_run.results for t in failing_tests(r.output) if not r.ok]
    flaky: list[str] = []
    if verdict.result == RED and verdict.test_only():
        verdict, flaky = _again(settings, sha, verdict, quarantined)
    finished = datetime.now(UTC)
    with session_scope(settings.database_url) as db:
        if flaky:
            observe(db, flaky, source="reconciler", tree=tree_of(settings.hub_path, sha), run_id=run_id,
                    settings=settings, output=failure_report(main_run.results))
        if verdict.suite_ran:
            note_runs(db, failed_tests, run_id=run_id, settings=settings)
        check = MainCheck(run_id=run_id, sha=sha, result=verdict.result, checks=_summary(main_run),
                          output=stored_text(verdict.report() or verdict.reason, None, settings),
                          failing_tests=verdict.failing_tests, quarantined=verdict.tolerated, started_at=started,
                          finished_at=finished, seconds=round((finished - started).total_seconds(), 2))
        if verdict.green and main_run.screenshot and settings.reconcile_screenshots_keep:
            check.screenshot = save_screenshot(screenshots_root(settings.hub_path), sha, main_run.screenshot,
                                               settings.reconcile_screenshots_keep).name
        preview = _keep_preview(settings, sha, main_run, finished) if verdict.green else None
        db.add(check)
        db.flush()
        summary = [{"command": c["command"], "ok": c["exit_code"] == 0 and not c["timed_out"], "s": c["s"]}
                   for c in check.checks]
        report: dict[str, Any] = {"sha": sha, "result": verdict.result, "green": verdict.green, "check_id": check.id}
        if verdict.green:
            note = f" (tolerated: {', '.join(verdict.tolerated[:3])})" if verdict.tolerated else ""
            record_event(db, "reconcile.green", f"main {sha[:10]} builds and passes{note}", run_id=run_id,
                         checks=summary, tolerated=verdict.tolerated, flaky=flaky, screenshot=check.screenshot,
                         preview=preview)
            report["fixes"] = []
        elif verdict.result == CANNOT_RUN:
            record_event(db, "reconcile.cannot_run", verdict.reason, run_id=run_id, checks=summary)
            report.update(fixes=[], error=verdict.reason)
        else:
            record_event(db, "reconcile.red", f"main {sha[:10]} is broken: "
                         f"{', '.join(r.command for r in verdict.failed)[:300]}", run_id=run_id, checks=summary,
                         tests=verdict.failing_tests[:20])
            report["red"] = _red_main(check)
        return report


def _keep_preview(settings: Settings, sha: str, main_run: MainRun, at: datetime) -> str | None:
    """Keep a green main's staged dist/ as its preview: its time, or why there is none (None when not asked)."""
    if main_run.dist is not None:
        keep_preview(previews_root(settings.hub_path), sha, main_run.dist, settings.reconcile_previews_keep, at)
        main_run.dist = None
        return at.isoformat()
    if main_run.dist_refused:
        log.warning("no preview of main %s: %s", sha[:10], main_run.dist_refused)
        return f"refused: {main_run.dist_refused}"
    return None


def _again(settings: Settings, sha: str, first: Verdict, quarantined: set[str]) -> tuple[Verdict, list[str]]:
    """A red of failing tests, run again on the same tree: (the verdict, the tests that failed then passed).

    Only failures that reproduce make main red (and are what bisection looks for); one that did not
    is observed flaky. With none reproducing, main is green.
    """
    again = judge(check_main(settings, sha, [r.command for r in first.failed], page=False), quarantined)
    flaky = [t for t in first.failing_tests if t not in again.failing_tests] if again.test_only() or again.green \
        else []
    kept = [t for t in first.failing_tests if t not in flaky]
    if again.green or (again.test_only() and not kept):
        return Verdict(GREEN, tolerated=first.tolerated + flaky, suite_ran=first.suite_ran), flaky
    return Verdict(RED, failed=first.failed, failing_tests=kept, tolerated=first.tolerated,
                   suite_ran=first.suite_ran), flaky


def _summary(run: MainRun) -> list[dict[str, Any]]:
    """Each check's result as stored: command, exit code, seconds, failing tests, and its kind."""
    return [{"command": r.command, "exit_code": r.exit_code, "s": r.duration_s, "timed_out": r.timed_out,
             "tests": failing_tests(r.output) if not r.ok else [],
             "kind": "install" if r is run.install else "page" if r.command == PAGE_COMMAND else "command"}
            for r in run.all]


# -- acting on red ---------------------------------------------------------------------------------


def _act(settings: Settings, client: ChatClient | None, red: RedMain) -> dict[str, Any]:
    if settings.reconcile_on_red is RedAction.revert:
        reverted = revert_red(settings, red)
        if "revert" in reverted or reverted.get("action") == "flaky":  # a flaky red asks for no fix task
            return reverted
        return {**_ask_for_fixes(settings, client, red), "revert_skipped": reverted.get("why")}
    return _ask_for_fixes(settings, client, red)


def _open_fixes(db: Session, run_id: str) -> list[Task]:
    return list(db.scalars(select(Task).where(Task.run_id == run_id, Task.kind == TaskKind.fix,
                                              Task.status.in_(OPEN))))


def _ask_for_fixes(settings: Settings, client: ChatClient | None, red: RedMain) -> dict[str, Any]:
    """Today's fallback: a few urgent fix tasks from the model, described from the failing output."""
    with session_scope(settings.database_url) as db:
        run = db.get(Run, red.run_id)
        check = db.get(MainCheck, red.check_id)
        assert run is not None and check is not None
        open_fixes = _open_fixes(db, run.id)
        room = min(settings.reconcile_max_fix_tasks - len(open_fixes), tasks_left(db, run))
        if room <= 0:
            check.action = "fix"
            return {"fixes": [], "note": "fix tasks already open, or the task budget is spent"}
        messages = render_messages(
            "reconciler", build_output=red.output, file_tree=read_main(settings.hub_path).file_tree(),
            open_fixes=[{"id": t.id, "title": t.title, "scope": t.scope} for t in open_fixes], max_tasks=room)
    # The model is asked outside any transaction; a slow model holds no lock or connection.
    outcome = ask(client or client_from_settings(settings, "reconciler"), messages, settings, batch=room)
    with session_scope(settings.database_url) as db:
        record(db, outcome, run_id=red.run_id, task_id=None, role="reconciler", settings=settings)
        if not outcome.ok:
            record_event(db, "reconcile.llm_failed", outcome.error or "", run_id=red.run_id)
            return {"fixes": [], "error": outcome.error}  # no action stored: the next tick asks again
        known = set(db.scalars(select(Feature.id)))
        try:
            parsed = parse_tasks(outcome.text, known, room)
        except UnparseableReply as exc:  # like a failed call: no action stored, the next tick asks again
            record_event(db, "reconciler.unparseable", stored_text(str(exc), 500, settings), run_id=red.run_id)
            return {"fixes": [], "error": "unparseable"}
        record_rejections(db, parsed.rejected, source="reconciler", run_id=red.run_id)
        open_scopes = [t.scope for t in _open_fixes(db, red.run_id)]
        made = []
        for draft in parsed.tasks[:room]:
            if any(scopes_overlap(draft.scope, s) for s in open_scopes):
                record_event(db, "reconciler.rejected", f"duplicate of an open fix: {draft.title}", run_id=red.run_id)
                continue
            draft.kind, draft.priority = TaskKind.fix, FIX_PRIORITY
            task = store_task(db, draft, run_id=red.run_id, base_sha=red.sha, settings=settings,
                              context={"build_output": red.output[-4000:]})
            open_scopes.append(task.scope)
            made.append(task.id)
            record_event(db, "task.created", f"fix: {draft.title}", run_id=red.run_id, task_id=task.id)
        check = db.get(MainCheck, red.check_id)
        if check is not None:
            check.action = "fix"
        dispatch_pending(db, red.run_id)
        return {"fixes": made}
