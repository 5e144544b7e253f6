"""The reconcile tick: build and test `main`, turn failures into a few urgent fix tasks.

Each sha of main is checked once. Fix tasks are deduplicated against fix tasks still open
(a proposal whose scope overlaps an open fix is dropped), and at most
RECONCILE_MAX_FIX_TASKS are open at a time.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.locks import try_xact_lock
from agentswarm.db.models import Feature, Run, RunStatus, Task, TaskKind
from agentswarm.db.session import session_scope
from agentswarm.db.states import OPEN
from agentswarm.git.hub import main_sha
from agentswarm.lifecycle.budgets import tasks_left
from agentswarm.lifecycle.dispatch import dispatch_pending, scopes_overlap
from agentswarm.llm import LLMClient
from agentswarm.llm.factory import client_from_settings
from agentswarm.planning.calls import ask, record
from agentswarm.planning.parsing import parse_tasks
from agentswarm.planning.repo_state import read_main
from agentswarm.planning.store import record_rejections, store_task
from agentswarm.prompts import render_messages
from agentswarm.reconcile.checks import CheckResult, run_checks
from agentswarm.sandbox.deps import deps_root
from agentswarm.sandbox.factory import check_backend_for

log = logging.getLogger(__name__)
FIX_PRIORITY = 1
BUILD_OUTPUT_CAP = 30_000


def failure_report(results: list[CheckResult]) -> str:
    """The failing commands' output, capped, for the reconciler prompt."""
    parts = []
    for r in results:
        if not r.ok:
            why = "timed out" if r.timed_out else f"exit {r.exit_code}"
            parts.append(f"$ {r.command}  ({why})\n{r.output.strip()}")
    return "\n\n".join(parts)[-BUILD_OUTPUT_CAP:]


def _open_fixes(db: Session, run_id: str) -> list[Task]:
    return list(db.scalars(select(Task).where(Task.run_id == run_id, Task.kind == TaskKind.fix,
                                              Task.status.in_(OPEN))))


def reconcile_tick(settings: Settings | None = None, client: LLMClient | None = None) -> dict:
    """Check main once per new sha; create fix tasks for what broke."""
    settings = settings or get_settings()
    with session_scope() as db:
        if not try_xact_lock(db, "reconcile"):
            return {"skipped": "another reconciler holds the lock"}
        run = db.scalars(select(Run).where(Run.status == RunStatus.active)
                         .order_by(Run.started_at.desc())).first()
        if run is None:
            return {"skipped": "no active run"}
        hub = str(settings.hub_path.resolve())
        sha = main_sha(settings.hub_path)
        if sha is None:
            return {"skipped": f"the hub at {hub} has no main"}
        if (run.config or {}).get("reconciled_sha") == sha:
            return {"skipped": f"main {sha[:10]} already checked"}
        results = run_checks(check_backend_for(settings), hub, sha, settings.reconcile_install,
                             settings.reconcile_commands, settings.reconcile_timeout_s, deps_root(settings.hub_path))
        run.config = {**(run.config or {}), "reconciled_sha": sha}
        summary = [{"command": r.command, "ok": r.ok, "s": r.duration_s} for r in results]
        if all(r.ok for r in results):
            record_event(db, "reconcile.green", f"main {sha[:10]} builds and passes", run_id=run.id,
                         checks=summary)
            return {"sha": sha, "green": True, "fixes": []}
        missing = [r.command for r in results if r.exit_code == 127]
        if missing:  # the machine lacks a tool: not something an agent can fix in the code
            record_event(db, "reconcile.cannot_run", f"command not found: {missing[0]}", run_id=run.id,
                         checks=summary)
            return {"sha": sha, "green": False, "fixes": [], "error": f"command not found: {missing[0]}"}
        record_event(db, "reconcile.red", f"main {sha[:10]} is broken", run_id=run.id, checks=summary)
        open_fixes = _open_fixes(db, run.id)
        room = min(settings.reconcile_max_fix_tasks - len(open_fixes), tasks_left(db, run))
        if room <= 0:
            return {"sha": sha, "green": False, "fixes": [], "note": "fix tasks already open, or the task budget is spent"}
        report = failure_report(results)
        messages = render_messages(
            "reconciler", build_output=report,
            file_tree=read_main(settings.hub_path).file_tree(),
            open_fixes=[{"id": t.id, "title": t.title, "scope": t.scope} for t in open_fixes], max_tasks=room)
        run_id = run.id
    # The model is asked outside any transaction; a slow model holds no lock or connection.
    outcome = ask(client or client_from_settings(settings), messages, settings)
    with session_scope() as db:
        record(db, outcome, run_id=run_id, task_id=None, role="reconciler", settings=settings)
        if not outcome.ok:
            record_event(db, "reconcile.llm_failed", outcome.error or "", run_id=run_id)
            _forget_sha(db, run_id)  # try this sha again next tick
            return {"sha": sha, "green": False, "fixes": [], "error": outcome.error}
        known = set(db.scalars(select(Feature.id)))
        parsed = parse_tasks(outcome.text, known, room)
        record_rejections(db, parsed.rejected, source="reconciler", run_id=run_id)
        open_scopes = [t.scope for t in _open_fixes(db, run_id)]
        made = []
        for draft in parsed.tasks[:room]:
            if any(scopes_overlap(draft.scope, s) for s in open_scopes):
                record_event(db, "reconciler.rejected", f"duplicate of an open fix: {draft.title}", run_id=run_id)
                continue
            draft.kind, draft.priority = TaskKind.fix, FIX_PRIORITY
            task = store_task(db, draft, run_id=run_id, base_sha=sha, settings=settings,
                              context={"build_output": report[-4000:]})
            open_scopes.append(task.scope)
            made.append(task.id)
            record_event(db, "task.created", f"fix: {draft.title}", run_id=run_id, task_id=task.id)
        dispatch_pending(db, run_id)
        return {"sha": sha, "green": False, "fixes": made}


def _forget_sha(db: Session, run_id: str) -> None:
    run = db.get(Run, run_id)
    if run is None:  # the run was deleted while the model was called: nothing to retry
        return
    cfg = dict(run.config or {})
    cfg.pop("reconciled_sha", None)
    run.config = cfg


