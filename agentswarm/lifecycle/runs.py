"""Runs: start (or resume) one with budgets from settings, check its budgets, end it with a reason.

A run ends when every feature is done and the reconciler has seen the current main green (finished), or when a budget is reached (stopped). Money
and time stop it at once; tasks in flight finish, unsent pending work is cancelled. The task
and planner-iteration budgets only stop planning: the run ends once the work it made has ended.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.locks import xact_lock
from agentswarm.db.models import (
    Feature,
    FeatureStatus,
    MainCheck,
    MergeAttempt,
    Run,
    RunStatus,
    Task,
    TaskStatus,
)
from agentswarm.db.states import MERGE_SETTLED, OPEN, transition
from agentswarm.git.hub import main_sha
from agentswarm.git.refs import is_ancestor, rev_parse
from agentswarm.lifecycle.budgets import DEFAULT_PLANNER_ITERATIONS, BudgetHit, check_budgets
from agentswarm.lifecycle.features import all_features_done, restart_features
from agentswarm.lifecycle.parents import settle_parent
from agentswarm.queue.names import RECONCILE_TICK
from agentswarm.queue.send import tick_after_commit


def active_runs(session: Session) -> list[Run]:
    """Runs still active, oldest first."""
    return list(session.scalars(select(Run).where(Run.status == RunStatus.active).order_by(Run.started_at)))


def planner_iteration_cap(session: Session, settings: Settings) -> int:
    """MAX_PLANNER_ITERATIONS, or max(100, 3 x the features not done yet): a pass plans what fits the free slots
    and the backlog, so four slots make a pass per task or two, and a flat 100 stopped such a run halfway."""
    if settings.max_planner_iterations is not None:
        return settings.max_planner_iterations
    open_features = session.scalar(select(func.count(Feature.id)).where(Feature.status != FeatureStatus.done)) or 0
    return max(DEFAULT_PLANNER_ITERATIONS, 3 * int(open_features))


def hub_replaced(session: Session, settings: Settings) -> str | None:
    """When the hub no longer holds the `main` the latest run started from (it was made anew, say after `make
    clean` removed var/, or HUB_PATH or GIT_REPO_URL now names another repository), Postgres describes work the
    hub does not have: that run, if active, is stopped with the reason, and every feature goes back to pending
    (its work is not on this `main`). Returns what was done, or None when the hub is the run's own."""
    latest = session.scalars(select(Run).order_by(Run.started_at.desc()).limit(1)).first()
    config = dict(latest.config or {}) if latest is not None else {}
    started, now = config.get("main_at_start"), main_sha(settings.hub_path)
    if latest is None or not started or now is None or config.get("hub_replaced") or (
            rev_parse(settings.hub_path, str(started)) is not None and is_ancestor(settings.hub_path, started, now)):
        return None
    latest.config = {**config, "hub_replaced": now}  # once: the next start_run makes a run of this hub
    reason = (f"the hub at {settings.hub_path} does not hold the main this run started from ({str(started)[:12]}; "
              f"its main is now {now[:12]}): the hub was made anew or replaced")
    stopped = end_run(session, latest.id, RunStatus.stopped, reason)
    settled = select(MergeAttempt.task_id).where(MergeAttempt.status.in_(MERGE_SETTLED))
    unlanded = [t for t in session.scalars(select(Task.id).where(
        Task.run_id == latest.id, Task.status == TaskStatus.complete, Task.id.not_in(settled)))
        if transition(session, t, TaskStatus.complete, TaskStatus.failed,
                      error="its branch cannot land: the hub was made anew or replaced")]
    reset = restart_features(session)
    record_event(session, "run.hub_replaced", reason, run_id=latest.id, run_stopped=stopped, features_reset=reset,
                 branches_dropped=len(unlanded))
    return (f"run {latest.id} " + ("stopped" if stopped else "had ended") + f": {reason}; {reset} features start "
            f"over" + (f", {len(unlanded)} finished branches of that run cannot land" if unlanded else ""))


def start_run(session: Session, settings: Settings, *, demo: bool | None = None) -> Run:
    """The active run if there is one (and the hub is still its own: see `hub_replaced`), else a new run with
    budgets and a deadline from settings."""
    xact_lock(session, "run-start")
    hub_replaced(session, settings)
    runs = active_runs(session)
    if runs:
        return runs[0]
    now = datetime.now(UTC)
    demo = settings.demo_mode if demo is None else demo
    run = Run(
        status=RunStatus.active, demo=demo,
        max_tasks=settings.run_max_tasks, max_tokens=settings.run_max_tokens, max_dollars=settings.run_max_dollars,
        deadline_at=now + timedelta(seconds=settings.run_deadline_s), planner_iterations=0,
        config={"max_planner_iterations": planner_iteration_cap(session, settings), "model": "simulator" if demo else settings.llm_model,
                "max_workers": settings.max_workers, "planner_batch_size": settings.planner_batch_size,
                "main_at_start": main_sha(settings.hub_path)},
    )
    session.add(run)
    session.flush()
    record_event(session, "run.started", f"budgets: {run.max_tasks} tasks, {run.max_tokens} tokens, "
                 f"${run.max_dollars:.2f}, {settings.run_deadline_s}s", run_id=run.id)
    return run


def end_run(session: Session, run_id: str, status: str, reason: str) -> bool:
    """Move an active run to finished/stopped with a reason; False if it had already ended."""
    final = RunStatus(status)
    if final is RunStatus.active:
        raise ValueError("a run ends as finished or stopped")
    session.flush()  # the expire below would otherwise drop unflushed changes to the run
    result = cast(CursorResult, session.execute(  # an UPDATE: a CursorResult, which has rowcount
        update(Run).where(Run.id == run_id, Run.status == RunStatus.active)
        .values(status=final, stop_reason=reason[:1000], ended_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)))
    if result.rowcount != 1:
        return False
    run = session.identity_map.get((Run, (run_id,), None))
    if run is not None:
        session.expire(run)
    cancelled = _cancel_unsent(session, run_id)
    record_event(session, "run.ended", reason, run_id=run_id, status=final, cancelled=len(cancelled))
    return True


def _cancel_unsent(session: Session, run_id: str) -> list[str]:
    """Pending tasks no worker was sent are cancelled; tasks sent or in flight are left to finish."""
    ids = list(session.scalars(select(Task.id).where(
        Task.run_id == run_id, Task.status == TaskStatus.pending, Task.enqueued_at.is_(None))))
    done = [t for t in ids if transition(session, t, TaskStatus.pending, TaskStatus.cancelled, error="run ended before it started")]
    parents = {p for p in session.scalars(select(Task.parent_id).where(Task.id.in_(done), Task.parent_id.is_not(None)))
               if p is not None}
    for parent_id in parents:
        settle_parent(session, parent_id)
    return done


def open_task_count(session: Session, run_id: str) -> int:
    """Tasks of the run not yet ended (pending, assigned, running)."""
    return int(session.scalar(select(func.count(Task.id)).where(
        Task.run_id == run_id, Task.status.in_(OPEN))) or 0)


def enforce_limits(session: Session, run: Run, settings: Settings) -> str | None:
    """End the run if it is over (features done, a budget reached); the reason planning must stop, or None."""
    if all_features_done(session):
        waiting, note = main_verdict(session, settings)
        if waiting:
            tick_after_commit(session, RECONCILE_TICK, expires_s=settings.plan_interval_s)
            return f"every feature is done; waiting: {waiting}"
        end_run(session, run.id, RunStatus.finished, "every feature is done" + (f" ({note})" if note else ""))
        return "every feature is done"
    hit = check_budgets(session, run, settings)
    if hit is None:
        return None
    _note_budget(session, run, hit)
    if not hit.drain or open_task_count(session, run.id) == 0:
        end_run(session, run.id, RunStatus.stopped, hit.reason)
    return hit.reason


def main_verdict(session: Session, settings: Settings) -> tuple[str, str]:
    """(why the run cannot be called done yet, a note on how main was judged): "every feature is done" needs
    the reconciler to have seen the current main green. A check that could not run (a missing tool) does
    not hold the run; the note says main was not checked.
    """
    if not settings.reconcile_commands:
        return "", "main not checked: RECONCILE_COMMANDS is empty"
    sha = main_sha(settings.hub_path)
    if sha is None:
        return "", ""
    result = session.scalar(select(MainCheck.result).where(MainCheck.sha == sha)
                            .order_by(MainCheck.id.desc()).limit(1))
    if result is None:
        return f"the reconciler has not checked main {sha[:10]} yet", ""
    if result == "red":
        return f"main {sha[:10]} is red", ""
    return "", "" if result == "green" else f"main {sha[:10]} could not be checked"


def _note_budget(session: Session, run: Run, hit: BudgetHit) -> None:
    """One budget event per budget per run, however many ticks see it."""
    noted = list((run.config or {}).get("budgets_hit", []))
    if hit.name in noted:
        return
    run.config = {**(run.config or {}), "budgets_hit": [*noted, hit.name]}
    record_event(session, "run.budget", hit.reason, run_id=run.id, budget=hit.name, drain=hit.drain)


def note_iteration(session: Session, run: Run) -> int:
    """Count one planner call against the run's iteration budget; returns the new count."""
    session.flush()
    session.execute(update(Run).where(Run.id == run.id)
                    .values(planner_iterations=Run.planner_iterations + 1)
                    .execution_options(synchronize_session=False))
    session.expire(run, ["planner_iterations"])
    return run.planner_iterations
