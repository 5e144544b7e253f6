"""Steering a run by hand: add a manual task, cancel a task, stop a run, ask for a check of main
(shared by the CLI and the dashboard)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import Run, RunStatus, Task, TaskKind, TaskStatus
from agentswarm.db.states import transition
from agentswarm.db.text import clean_text, stored_text
from agentswarm.errors import SwarmError
from agentswarm.git.hub import main_sha
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.lifecycle.parents import settle_parent
from agentswarm.lifecycle.runs import end_run
from agentswarm.ops.status import latest_run
from agentswarm.planning.parsing import InvalidTask, check_scope_path

MAX_DESCRIPTION = 20_000
MAX_TITLE = 200
CANCELLABLE = (TaskStatus.pending, TaskStatus.blocked)


class SteeringError(SwarmError):
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


def add_manual_task(db: Session, settings: Settings, description: str, scope: list[str] | tuple[str, ...] = (),
                    priority: int = 3, title: str = "", run_id: str | None = None) -> Task:
    """Create a manual task in the active run and send it to a worker once the session commits."""
    description = stored_text(description or "", None, settings).strip()  # NUL, lone surrogates, secrets
    title = stored_text(title or "", None, settings)
    if not description:
        raise InvalidTask("description is empty")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidTask(f"description longer than {MAX_DESCRIPTION} characters")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 10:
        raise InvalidTask("priority must be an integer from 1 to 10")
    paths = [check_scope_path(clean_text(p) if isinstance(p, str) else p) for p in scope]
    run = active_run(db, run_id)
    task = Task(run_id=run.id, kind=TaskKind.manual, title=(title.strip() or description)[:MAX_TITLE],
                description=description, scope=paths, priority=priority, branch="pending",
                max_attempts=settings.max_attempts, base_sha=main_sha(settings.hub_path))
    db.add(task)
    db.flush()
    task.branch = f"swarm/{task.id}"
    record_event(db, "task.created", "manual", run_id=run.id, task_id=task.id)
    dispatch_pending(db, run.id)
    return task


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
