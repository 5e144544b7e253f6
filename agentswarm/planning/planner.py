"""The root planner's tick: end runs that are over, dispatch held work, plan more when there is room.

A tick comes from beat (the safety net) or early, as a plan request (queue/plan_requests.py: a landing, a task
that ends, a feature that becomes ready; coalesced, so a burst makes one pass and a request arriving during a
model call makes exactly one pass after it). The planner plans for the free worker slots plus PLANNER_BACKLOG
tasks more: those wait pending and unsent, and dispatch sends one the moment a slot frees.

Every tick also brings the features blocked behind one that failed for good up to date and ends
(after a grace for a person) a run with nothing runnable left (planning/blocked.py, planning/stuck.py).

Three steps, so a slow model blocks nothing: (1) under the `plan` transaction lock, check each
run and build the planner's request; (2) call the model with no transaction open; (3) under the
lock again, record the call, re-validate every proposal against the board as it is *now*, store
the survivors and dispatch them after commit. Only the tick holding the session-level `planner`
lock plans (step 1-3); another tick meanwhile still ends runs and dispatches, and leaves a note that makes
the holder request one more pass when it is done (a tick is deferred, never dropped). Because step 3
re-reads the open tasks, a feature can never get two tasks even if two planners raced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from agentswarm.chaos import strike
from agentswarm.config import Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.locks import lock_key, try_xact_lock, xact_lock
from agentswarm.db.models import Run, RunStatus, Task
from agentswarm.db.session import get_engine, session_scope
from agentswarm.db.states import OPEN
from agentswarm.db.text import stored_text
from agentswarm.lifecycle.budgets import check_budgets, tasks_left
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.lifecycle.features import mark_features_in_progress
from agentswarm.lifecycle.runs import active_runs, enforce_limits, note_iteration
from agentswarm.llm import ChatClient
from agentswarm.llm.factory import client_from_settings
from agentswarm.planning import state
from agentswarm.planning.blocked import refresh_blocked
from agentswarm.planning.calls import CallOutcome, ask, record
from agentswarm.planning.parsing import Rejection, TaskDraft, UnparseableReply, parse_tasks
from agentswarm.planning.repo_state import read_main
from agentswarm.planning.store import record_rejections, store_task
from agentswarm.planning.stuck import settle_stuck
from agentswarm.prompts import render_messages
from agentswarm.queue import plan_requests

log = logging.getLogger(__name__)
PLAN_LOCK_WAIT_S = 5.0  # another tick's bookkeeping under the lock takes milliseconds


@dataclass
class PlanJob:
    """One run's planning request, built in step 1 and finished in step 3."""

    run_id: str
    room: int
    base_sha: str | None
    messages: list[dict] = field(default_factory=list)


@contextmanager
def planner_lock(settings: Settings) -> Iterator[bool]:
    """A session-level advisory lock on its own idle connection, held across the LLM call.

    Unlike a transaction lock it keeps no transaction open while the model thinks, and
    Postgres drops it if the process dies mid-call.
    """
    with get_engine(settings.database_url).connect() as conn:
        key = lock_key(plan_requests.PLANNER_LOCK)
        got = bool(conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("select pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


def _take_plan_lock(session: Session, wait_s: float) -> bool:
    """The `plan` transaction lock, polled for up to wait_s (a failed try leaves the transaction usable)."""
    deadline = time.monotonic() + wait_s
    while not try_xact_lock(session, "plan"):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _open_count(session: Session, run_id: str) -> int:
    # A decomposed parent waits in `running` but holds no worker: only count tasks doing work.
    parents = select(Task.parent_id).where(Task.parent_id.is_not(None), Task.run_id == run_id)
    return int(session.scalar(select(func.count(Task.id)).where(
        Task.run_id == run_id, Task.status.in_(OPEN), Task.id.not_in(parents))) or 0)


def _prepare(session: Session, run: Run, settings: Settings, may_plan: bool, report: dict) -> PlanJob | None:
    """Step 1 for one run: limits, dispatch, and the request if the run has room for more work."""
    stop = enforce_limits(session, run, settings)
    active = run.status == RunStatus.active
    report["dispatched"] = len(dispatch_pending(session, run.id, slots=settings.max_workers)) if active else 0
    if stop:
        report["stopped"] = stop
        return None
    board = state.load_board(session, run.id, settings.max_attempts)
    blocking = refresh_blocked(session, run.id, board)
    if blocking.blocked:
        report["blocked"] = len(blocking.blocked)
    stuck = settle_stuck(session, run, settings, board, blocking)
    if stuck:
        report["stuck"] = stuck
        if run.status != RunStatus.active:
            report["stopped"] = stuck
        return None
    if run.paused_at is not None:
        report["skipped"] = "paused"
        return None
    # Open tasks include the backlog: stored, unsent, waiting for a slot (dispatch_pending's `slots`).
    room = min(settings.planner_batch_size, settings.max_workers + settings.backlog_size - _open_count(session, run.id),
               tasks_left(session, run))
    if room <= 0:
        report["skipped"] = "no room"
        return None
    if not may_plan:
        report["skipped"] = "another planner is running"
        return None
    features = state.features_input(board)
    if not features:
        report["skipped"] = "no feature is ready"
        return None
    main = read_main(settings.hub_path)
    messages = render_messages(
        "root-planner", features=features, file_tree=main.file_tree(), recent_commits=main.recent_commits(),
        in_flight=state.in_flight_input(board), recent_failures=state.failures_input(session, run.id),
        max_tasks=room)
    return PlanJob(run.id, room, main.sha, messages)


def _select(board: state.Board, drafts: list[TaskDraft], limit: int) -> tuple[list[TaskDraft], list[Rejection]]:
    """Drafts that still make sense now: features ready, no duplicate of an open task, one task per feature."""
    kept: list[TaskDraft] = []
    dropped: list[Rejection] = []
    claimed: set[str] = set()
    for i, d in enumerate(drafts):
        reason = next((r for r in (board.why_not(f) for f in d.feature_ids) if r), None)
        if reason is None and claimed & set(d.feature_ids):
            reason = "another task in this batch covers the same feature"
        dup = board.duplicate_of(d.title, d.scope, d.feature_ids) if reason is None else None
        if dup:
            reason = f"duplicate of open task {dup}"
        if reason is None and len(kept) >= limit:
            reason = f"over the limit of {limit} tasks"
        if reason:
            dropped.append(Rejection(i, reason, d.title[:300]))
            continue
        claimed |= set(d.feature_ids)
        kept.append(d)
    return kept, dropped


def _finish(job: PlanJob, outcome: CallOutcome, settings: Settings) -> dict[str, Any]:
    """Step 3: record the call, then store what survives validation and dispatch it after commit."""
    with session_scope(settings.database_url) as session:
        xact_lock(session, "plan")
        run = session.get(Run, job.run_id)
        if run is None:
            return {"skipped": "run vanished"}
        record(session, outcome, run_id=run.id, task_id=None, role="planner", settings=settings)
        iteration = note_iteration(session, run)
        if run.status != RunStatus.active:
            return {"skipped": "run ended during the call"}
        hit = check_budgets(session, run, settings)
        if hit is not None and not hit.drain:  # this very call spent the last of the money: store nothing
            return {"stopped": enforce_limits(session, run, settings)}
        if not outcome.ok:
            record_event(session, "planner.llm_error", outcome.error or "", run_id=run.id, iteration=iteration)
            return {"error": "llm"}
        board = state.load_board(session, run.id, settings.max_attempts)
        try:
            parsed = parse_tasks(outcome.text, board.features.keys(), job.room)
        except UnparseableReply as exc:
            record_event(session, "planner.unparseable", stored_text(str(exc), 500, settings), run_id=run.id,
                         iteration=iteration)
            return {"error": "unparseable"}
        kept, dropped = _select(board, parsed.tasks, min(job.room, tasks_left(session, run)))
        rejected = parsed.rejected + dropped
        record_rejections(session, rejected, source="planner", run_id=run.id)
        for draft in kept:
            task = store_task(session, draft, run_id=run.id, base_sha=job.base_sha, settings=settings,
                              context={"planned_by": "planner", "iteration": iteration})
            mark_features_in_progress(session, draft.feature_ids)
            record_event(session, "task.created", task.title[:200], run_id=run.id, task_id=task.id,
                         scope=draft.scope, feature_ids=draft.feature_ids, priority=draft.priority)
        sent = dispatch_pending(session, run.id, slots=settings.max_workers)
        strike("plan.store")
        record_event(session, "planner.planned", f"{len(kept)} tasks stored, {len(rejected)} dropped",
                     run_id=run.id, iteration=iteration, dispatched=len(sent))
        return {"planned": len(kept), "rejected": len(rejected), "dispatched_after": len(sent)}


def plan_tick(settings: Settings | None = None, client: ChatClient | None = None, *,
              requested: bool = False) -> dict[str, Any]:
    """For every active run end it if it is over, dispatch held tasks, and plan more work if there is room.

    `requested`: sent early by a plan request, not by beat. Safe to run twice, and at the same time.
    """
    settings = settings or get_settings()
    plan_requests.tick_started(settings, requested=requested)  # before the lock: see plan_requests
    with planner_lock(settings) as may_plan:
        if may_plan:
            plan_requests.lock_taken(settings)
        report = _tick(settings, client, may_plan)
        if may_plan and "skipped" in report:  # the bookkeeping lock stayed busy: this pass is still owed
            plan_requests.tick_started(settings, requested=False)
    if may_plan:  # only now, with the lock released: a request noted while we held it is found here
        plan_requests.lock_released(settings)
    return report


def _tick(settings: Settings, client: ChatClient | None, may_plan: bool) -> dict[str, Any]:
    """Steps 1-3 for every active run; only a tick holding the planner lock (may_plan) calls the model."""
    runs: dict[str, dict[str, Any]] = {}
    jobs: list[PlanJob] = []
    with session_scope(settings.database_url) as session:
        if not _take_plan_lock(session, PLAN_LOCK_WAIT_S if may_plan else 0.0):
            return {"skipped": "another plan tick holds the lock"}
        for run in active_runs(session):
            runs[run.id] = {}
            job = _prepare(session, run, settings, may_plan, runs[run.id])
            if job is not None:
                jobs.append(job)
    if not jobs:
        return {"runs": runs}
    own = client is None
    try:
        for job in jobs:
            try:
                client = client or client_from_settings(settings)
                runs[job.run_id].update(_finish(job, ask(client, job.messages, settings), settings))
            except Exception as exc:  # one run's failure must not stop the tick or the other runs
                log.exception("planning run %s failed", job.run_id)
                runs[job.run_id]["error"] = type(exc).__name__
                with session_scope(settings.database_url) as session:
                    record_event(session, "planner.error", stored_text(f"{type(exc).__name__}: {exc}", 500, settings),
                                 run_id=job.run_id)
    finally:
        if own and client is not None:
            client.close()
    return {"runs": runs}
