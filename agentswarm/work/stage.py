"""The work stage: drive one sandboxed agent through one task, from take to handoff.

Runs in a `-P threads` worker, which has no Celery time limits and cannot kill a task on
revoke: every deadline here is enforced by this code and by the sandbox's own timeout.
Postgres decides who owns a task; a duplicate message finds the task taken and returns.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from agentswarm.config import Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.locks import xact_lock
from agentswarm.db.lookup import load_task, missing_is_done
from agentswarm.db.models import Run, RunStatus, Task, TaskStatus
from agentswarm.db.session import retry_on_db_loss, session_scope
from agentswarm.db.states import transition
from agentswarm.git.hub import main_sha
from agentswarm.lifecycle.dispatch import busy_scopes, scopes_overlap
from agentswarm.lifecycle.handoffs import finish_task
from agentswarm.llm.factory import client_from_settings
from agentswarm.planning.subplanner import maybe_decompose
from agentswarm.sandbox import SandboxBackend, SandboxError, SandboxHandle
from agentswarm.sandbox.factory import backend_for
from agentswarm.work.drive import build_spec, drive, failure, open_gate, sandbox_env
from agentswarm.work.heartbeats import heartbeats
from agentswarm.work.progress import live_progress

log = logging.getLogger(__name__)


def _take(task_id: str, settings: Settings) -> tuple[Task, str | None] | str:
    """pending -> assigned, or the reason the task is not ours to run."""
    with session_scope() as db:
        task = load_task(db, task_id)
        if task.status != TaskStatus.pending:
            return f"not-pending:{task.status}"
        run = db.get(Run, task.run_id)
        if run is None or run.status != RunStatus.active:
            transition(db, task_id, TaskStatus.pending, TaskStatus.cancelled, error="run ended before the task started")
            return "cancelled"
        if run.paused_at is not None:  # sent before the pause: it waits, unsent, for the resume
            db.execute(update(Task).where(Task.id == task.id, Task.status == TaskStatus.pending).values(enqueued_at=None))
            return "paused"
        # Takes in one run are serialised so that two overlapping scopes never both start.
        xact_lock(db, f"take:{task.run_id}")
        db.refresh(task)
        if task.status != TaskStatus.pending:
            return f"not-pending:{task.status}"
        if _in_flight_overlap(db, task):
            db.execute(update(Task).where(Task.id == task.id).values(enqueued_at=None))
            return "held"
        old_sandbox = task.sandbox_id
        if not transition(db, task_id, TaskStatus.pending, TaskStatus.assigned, attempts=task.attempts + 1,
                          heartbeat_at=datetime.now(UTC), sandbox_id=None, error=None):
            return "lost-race"
        db.refresh(task)
        record_event(db, "task.assigned", f"attempt {task.attempts}", run_id=task.run_id, task_id=task.id)
        return task, old_sandbox


def _in_flight_overlap(db: Session, task: Task) -> bool:
    busy = busy_scopes(db, task.run_id, exclude=task.id, include_sent=False)
    return any(scopes_overlap(task.scope, s) for s in busy)


def _reap(backend: SandboxBackend, sandbox_id: str | None) -> None:
    if not sandbox_id:
        return
    try:
        backend.terminate(sandbox_id)
    except SandboxError:
        log.warning("could not reap old sandbox %s", sandbox_id, exc_info=True)


def _decompose(task_id: str, settings: Settings) -> bool:
    """Let the subplanner split a large task; True when children were created."""
    with session_scope() as db:
        task = load_task(db, task_id)
        children = maybe_decompose(db, task, client_from_settings(settings, "subplanner"), settings=settings)
        if children:
            record_event(db, "task.decomposed", f"{len(children)} children", run_id=task.run_id,
                         task_id=task.id, children=[c.id for c in children])
        return bool(children)


@missing_is_done
def work_on(task_id: str, settings: Settings | None = None) -> str:
    """Take the task, run it in a sandbox, store the handoff; returns what happened."""
    settings = settings or get_settings()
    taken = _take(task_id, settings)
    if isinstance(taken, str):
        log.info("task %s not run: %s", task_id, taken)
        return taken
    task, old_sandbox = taken
    backend = backend_for(settings)
    _reap(backend, old_sandbox)
    with session_scope() as db:
        if not transition(db, task_id, TaskStatus.assigned, TaskStatus.running):
            return "lost-while-assigned"
    if _decompose(task_id, settings):
        return "decomposed"
    started = time.monotonic()
    sb: SandboxHandle | None = None
    gate = None
    try:
        gate = open_gate(backend, settings)
        sb = backend.create(run_id=task.run_id, task_id=task.id, attempt=task.attempts,
                            env=sandbox_env(settings, gate, backend.delivery))
        # Start from main as it is now, not as it was when planned: fewer conflicts at merge time.
        task.base_sha = main_sha(settings.hub_path) or task.base_sha
        with session_scope() as db:  # recorded before any agent work, so a crash can be reaped
            db.execute(update(Task).where(Task.id == task_id).values(sandbox_id=sb.id, base_sha=task.base_sha))
            record_event(db, "sandbox.created", sb.id, run_id=task.run_id, task_id=task_id)
        spec = build_spec(task, settings, backend.delivery)
        # The agent's steps reach Postgres as they happen; the last read is made before the handoff is stored.
        with (heartbeats(settings.heartbeat_interval_s).keep_alive(task_id, sb.id), gate or nullcontext(),
              live_progress(backend, sb, task_id, task.attempts, settings, gate)):
            handoff = drive(backend, sb, spec, settings, gate)
    except Exception as exc:  # the sandbox or its provider failed: the task fails, the worker lives
        log.exception("task %s: sandbox failure", task_id)
        handoff = failure(task_id, f"sandbox error: {type(exc).__name__}: {exc}", started)
    finally:
        if sb is not None:
            _reap(backend, sb.id)
        if gate is not None:
            gate.remove()
    sandbox_id = sb.id if sb else None
    return retry_on_db_loss(lambda: finish_task(task_id, task.attempts, sandbox_id, handoff, settings),
                            what=f"storing the handoff of {task_id}")
