"""Loading the task a message names. Messages carry ids from Redis, and an id may name no row (a run deleted, a
message from another database, a person's `celery call` with a mistyped id): that is a no-op with a warning and an
event naming the id, never a crash or a retry. An argument that is not an id at all is a bad call."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.db.events import record_event
from agentswarm.db.models import Run, RunStatus, Task
from agentswarm.db.session import session_scope
from agentswarm.db.text import stored_text
from agentswarm.errors import BadCall, TaskMissing

log = logging.getLogger(__name__)
MISSING = "missing"
TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
P = ParamSpec("P")


def load_task(db: Session, task_id: str) -> Task:
    """The task with this id; TaskMissing when there is none."""
    task = db.get(Task, task_id)
    if task is None:
        raise TaskMissing(f"no task {task_id}")
    return task


def missing_is_done(stage: Callable[Concatenate[str, P], str]) -> Callable[Concatenate[Any, P], str]:
    """A stage handler given a task id first: "missing" (a warning and an event naming the id) when no task has it.

    An id that is not a string (a list, a dict, None: a hand-made message) is a BadCall; a string that cannot be an
    id (too long, odd characters) is treated like an unknown id, and never reaches a query.
    """

    @functools.wraps(stage)
    def handler(task_id: Any, *args: P.args, **kwargs: P.kwargs) -> str:
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            task_id = str(task_id)
        if not isinstance(task_id, str):
            raise BadCall(f"{stage.__name__}: the task id must be a string, got {type(task_id).__name__}")
        if not TASK_ID_RE.match(task_id):
            return unknown_task(stage.__name__, task_id, "is not a task id")
        try:
            return stage(task_id, *args, **kwargs)
        except TaskMissing:
            return unknown_task(stage.__name__, task_id, "names no task")

    return handler


def unknown_task(where: str, task_id: str, why: str) -> str:
    """Log a warning and record an event (in the active run's feed) for an id that names no task; MISSING."""
    shown = stored_text(task_id, 80)
    message = f"{where}: {shown!r} {why}; nothing done"
    log.warning("%s", message)
    try:
        with session_scope() as db:
            run_id = db.scalar(select(Run.id).where(Run.status == RunStatus.active).order_by(Run.started_at.desc()))
            record_event(db, "task.unknown_id", message, run_id=run_id, stage=where, given=shown)
    except Exception:  # the warning above is the record that matters; a database hiccup must not fail the message
        log.warning("could not record the unknown-id event", exc_info=True)
    return MISSING
