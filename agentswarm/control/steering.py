"""Steering a run by hand: add a fix or manual task, cancel or retry a task, pause, resume or stop a run, ask for
a check of main (shared by the CLI, the dashboard and the `agentswarm.add_task` Celery task)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Update, select, update
from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.control.status import latest_run
from agentswarm.db.events import record_event
from agentswarm.db.locks import xact_lock
from agentswarm.db.models import Feature, FeatureStatus, Run, RunStatus, Task, TaskKind, TaskStatus
from agentswarm.db.states import transition
from agentswarm.db.text import clean_text, stored_text
from agentswarm.errors import BadRequest
from agentswarm.git.hub import main_sha
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.lifecycle.features import set_feature_status
from agentswarm.lifecycle.parents import settle_parent
from agentswarm.lifecycle.runs import end_run
from agentswarm.planning.blocked import refresh_run
from agentswarm.planning.parsing import InvalidTask, check_scope_path

MAX_DESCRIPTION = 20_000
MAX_TITLE = 200
MAX_SCOPE = 50
MAX_FEATURES = 20
CANCELLABLE = (TaskStatus.pending, TaskStatus.blocked)


class SteeringError(BadRequest):
    """A steering request that cannot be carried out; the message says why."""


class NotFound(SteeringError):
    """The run or task named does not exist."""


class Conflict(SteeringError):
    """The run or task is not in a state that allows the request."""


def active_run(db: Session, run_id: str | None = None) -> Run:
    """The run to steer: the one named (which must be active) or the latest run, if active."""
    run = db.get(Run, run_id) if run_id else latest_run(db)
    if run is None:
        raise NotFound(f"no run {run_id}" if run_id else "no run yet: start one first")
    if run.status != RunStatus.active:
        raise Conflict(f"run {run.id} is {run.status}, not active")
    return run


MAX_KEY = 128
KINDS = (TaskKind.fix, TaskKind.manual)  # what a person may inject; the others are made by the swarm itself
REQUEST_FIELDS = ("description", "scope", "priority", "kind", "key", "title", "run", "features")
_KEY_RE = re.compile(rf"^[\x21-\x7e]{{1,{MAX_KEY}}}$")


def add_task(db: Session, settings: Settings, description: str, scope: list[str] | tuple[str, ...] = (),
             priority: int = 3, title: str = "", run_id: str | None = None, *, kind: str = "manual",
             key: str | None = None, features: list[str] | tuple[str, ...] = ()) -> tuple[Task, bool]:
    """Create a fix or manual task in the active run (or the run named) and send it to a worker once the session
    commits; returns (task, created). The same `key` in the same run returns the task it made the first time.

    `features`: the features the task is for (not done ones): they are in progress, done when it lands, and what
    was blocked behind them waits no more."""
    problems: list[str] = []
    description, title, paths, feature_ids = _checked_fields(db, settings, description, scope, priority, title,
                                                             kind, key, features, problems)
    if problems:
        raise InvalidTask("; ".join(problems))
    run = active_run(db, run_id)
    if key is not None:
        xact_lock(db, f"request-key:{run.id}:{key}")
        twin = db.scalar(select(Task).where(Task.run_id == run.id, Task.request_key == key))
        if twin is not None:
            return twin, False
    task = Task(run_id=run.id, kind=TaskKind(kind), title=(title.strip() or description)[:MAX_TITLE],
                description=description, scope=paths, priority=priority, branch="pending", request_key=key,
                max_attempts=settings.max_attempts, base_sha=main_sha(settings.hub_path), feature_ids=feature_ids)
    db.add(task)
    db.flush()
    task.branch = f"swarm/{task.id}"
    record_event(db, "task.created", f"{kind} task added by a person: {task.title[:150]}", run_id=run.id,
                 task_id=task.id, task_kind=kind, priority=priority, scope=paths, key=key, feature_ids=feature_ids)
    if feature_ids:
        set_feature_status(db, feature_ids, FeatureStatus.in_progress)
        refresh_run(db, run.id, settings.max_attempts)
    dispatch_pending(db, run.id)
    return task, True


def _checked_fields(db: Session, settings: Settings, description: Any, scope: Any, priority: Any, title: Any,
                    kind: Any, key: Any, features: Any,
                    problems: list[str]) -> tuple[str, str, list[str], list[str]]:
    """(description, title, scope paths, feature ids) cleaned; what is wrong with them added to `problems`,
    every field checked, so a caller learns all its mistakes at once."""
    description = stored_text(description if isinstance(description, str) else "", None, settings).strip()
    title = stored_text(title if isinstance(title, str) else "", None, settings)
    if not description:
        problems.append("description is empty (it says what the agent is to do)")
    elif len(description) > MAX_DESCRIPTION:
        problems.append(f"description longer than {MAX_DESCRIPTION} characters")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10:
        problems.append(f"priority must be an integer from 1 (most urgent) to 10, got {priority!r}"[:200])
    if kind not in {k.value for k in KINDS}:
        problems.append(f"kind must be one of {', '.join(k.value for k in KINDS)}, got {str(kind)[:40]!r}")
    if key is not None and (not isinstance(key, str) or not _KEY_RE.match(key)):
        problems.append(f"key must be 1-{MAX_KEY} printable characters without spaces")
    if isinstance(scope, str):
        scope = [scope]
    paths: list[str] = []
    if not isinstance(scope, list | tuple) or len(scope) > MAX_SCOPE:
        problems.append(f"scope must be a list of at most {MAX_SCOPE} paths inside the repository")
    else:
        for p in scope:
            try:
                paths.append(check_scope_path(clean_text(p) if isinstance(p, str) else p))
            except InvalidTask as exc:
                problems.append(str(exc))
    try:
        feature_ids = _features_for_task(db, features)
    except InvalidTask as exc:
        problems.append(str(exc))
        feature_ids = []
    return description, title, list(dict.fromkeys(paths)), feature_ids


def _features_for_task(db: Session, features: Any) -> list[str]:
    """The feature ids a person's task is for: known, not done, at most MAX_FEATURES."""
    if isinstance(features, str):
        features = [features]
    if not isinstance(features, list | tuple) or len(features) > MAX_FEATURES or not all(
            isinstance(f, str) for f in features):
        raise InvalidTask(f"features must be a list of at most {MAX_FEATURES} feature ids")
    ids = list(dict.fromkeys(f.strip() for f in features if f.strip()))
    known = dict(db.execute(select(Feature.id, Feature.status).where(Feature.id.in_(ids))).all()) if ids else {}
    unknown = [f for f in ids if f not in known]
    if unknown:
        raise InvalidTask(f"unknown feature{'s' if len(unknown) > 1 else ''} {', '.join(unknown)[:200]}")
    done = [f for f in ids if known[f] == FeatureStatus.done]
    if done:
        raise InvalidTask(f"feature{'s' if len(done) > 1 else ''} {', '.join(done)[:200]} already done")
    return ids


def add_task_request(db: Session, settings: Settings, request: dict[str, Any]) -> tuple[Task, bool]:
    """add_task from a caller's keyword arguments (`celery call agentswarm.add_task --kwargs ...`), checked first."""
    problems = []
    unknown = sorted(set(request) - set(REQUEST_FIELDS))
    if unknown:
        problems.append(f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))[:200]}"
                        f" (add_task takes {', '.join(REQUEST_FIELDS)})")
    if "description" not in request:
        problems.append("description is required (what the agent is to do)")
    run = request.get("run")
    if run is not None and not isinstance(run, str):
        problems.append("run must be a run id")
    if problems:  # the values' own problems too, in the same line
        _checked_fields(db, settings, request.get("description", "x"), request.get("scope") or [],
                        request.get("priority", 3), request.get("title") or "", request.get("kind", "manual"),
                        request.get("key"), request.get("features") or [], problems)
        raise InvalidTask("; ".join(problems))
    return add_task(db, settings, request["description"], request.get("scope") or [], request.get("priority", 3),
                    request.get("title") or "", run, kind=request.get("kind", "manual"), key=request.get("key"),
                    features=request.get("features") or [])


def record_rejection(db: Session, request: dict[str, Any], reason: str) -> None:
    """A request refused: a `task.rejected` event in the active run's feed (the dashboard shows it), if any run is."""
    run = latest_run(db)
    if run is None or run.status != RunStatus.active:
        return
    fields = sorted(str(k)[:40] for k in request)[:20]
    record_event(db, "task.rejected", stored_text(f"a task request was refused: {reason}", 600), run_id=run.id,
                 fields=fields)


def cancel_task(db: Session, task_id: str, reason: str = "cancelled by a person") -> Task:
    """Cancel a pending or blocked task (a worker that later receives it finds it cancelled and skips it)."""
    task = db.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if not transition(db, task_id, CANCELLABLE, TaskStatus.cancelled, error=stored_text(reason, 1000)):
        db.refresh(task)
        raise Conflict(f"task {task_id} is {task.status}; only pending or blocked tasks can be cancelled")
    record_event(db, "task.cancelled", stored_text(reason, 300), run_id=task.run_id, task_id=task_id)
    db.refresh(task)
    if task.parent_id:
        settle_parent(db, task.parent_id)
    dispatch_pending(db, task.run_id)
    return task


RETRYABLE = (TaskStatus.failed, TaskStatus.blocked)


def retry_task(db: Session, settings: Settings, task_id: str, reason: str = "retried by a person") -> Task:
    """A failed or blocked task back to pending with a fresh allowance of attempts, and sent once its scope is free."""
    task = db.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if task.status not in RETRYABLE:
        raise Conflict(f"task {task_id} is {task.status}; only failed or blocked tasks can be retried")
    run = active_run(db, task.run_id)
    # Attempts keep counting (each attempt's handoff is stored under its number); the allowance grows instead.
    if not transition(db, task_id, RETRYABLE, TaskStatus.pending, error=None, enqueued_at=None, finished_at=None,
                      started_at=None, max_attempts=task.attempts + settings.max_attempts):
        db.refresh(task)
        raise Conflict(f"task {task_id} is {task.status}; only failed or blocked tasks can be retried")
    if task.feature_ids:
        set_feature_status(db, task.feature_ids, FeatureStatus.in_progress)
    record_event(db, "task.retried", stored_text(reason, 300), run_id=run.id, task_id=task_id,
                 attempts_so_far=task.attempts)
    refresh_run(db, run.id, settings.max_attempts)  # what waited on its features waits no more
    db.refresh(task)
    dispatch_pending(db, run.id)
    return task


def pause_run(db: Session, run_id: str | None = None, reason: str = "paused by a person") -> tuple[Run, bool]:
    """Hold the active run: nothing new is sent to a worker or planned; work in flight finishes and merges.

    Returns (run, changed): pausing a paused run changes nothing.
    """
    run = active_run(db, run_id)
    changed = _updated(db, update(Run).where(Run.id == run.id, Run.paused_at.is_(None)).values(paused_at=datetime.now(UTC)))
    if changed:
        record_event(db, "run.paused", stored_text(reason, 300), run_id=run.id)
    db.refresh(run)
    return run, changed


def resume_run(db: Session, run_id: str | None = None, reason: str = "resumed by a person") -> tuple[Run, list[str]]:
    """Let a paused run go on: its held pending tasks are sent now; returns (run, the ids sent)."""
    run = active_run(db, run_id)
    changed = _updated(db, update(Run).where(Run.id == run.id, Run.paused_at.is_not(None)).values(paused_at=None))
    if changed:
        record_event(db, "run.resumed", stored_text(reason, 300), run_id=run.id)
    db.refresh(run)
    return run, dispatch_pending(db, run.id)


def _updated(db: Session, stmt: Update) -> bool:
    """Run a conditional UPDATE; whether it changed a row."""
    return cast(CursorResult, db.execute(stmt)).rowcount > 0


def stop_run(db: Session, run_id: str, reason: str = "stopped by a person") -> None:
    """Stop an active run: nothing new is planned, tasks in flight finish, unsent pending work is cancelled."""
    if db.get(Run, run_id) is None:
        raise NotFound(f"no run {run_id}")
    if not end_run(db, run_id, RunStatus.stopped, reason or "stopped by a person"):
        raise Conflict(f"run {run_id} has already ended")


def request_reconcile(*, force: bool = False) -> None:
    """Ask the reconcile worker to check main now (`force`: even a sha it checked already)."""
    from agentswarm.queue.names import RECONCILE_TICK
    from agentswarm.queue.send import send_tick

    send_tick(RECONCILE_TICK, force=force)
