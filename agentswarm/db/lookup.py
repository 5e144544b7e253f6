"""Loading the task a message names. Messages carry ids from Redis, and an id may name no row
(a run deleted, a message from another database): that is a no-op, never a crash or a retry."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec

from sqlalchemy.orm import Session

from agentswarm.db.models import Task
from agentswarm.errors import TaskMissing

log = logging.getLogger(__name__)
MISSING = "missing"
P = ParamSpec("P")


def load_task(db: Session, task_id: str) -> Task:
    """The task with this id; TaskMissing when there is none."""
    task = db.get(Task, task_id)
    if task is None:
        raise TaskMissing(f"no task {task_id}")
    return task


def missing_is_done(stage: Callable[P, str]) -> Callable[P, str]:
    """A stage handler that returns "missing" (and logs one line) when its task does not exist."""

    @functools.wraps(stage)
    def handler(*args: P.args, **kwargs: P.kwargs) -> str:
        try:
            return stage(*args, **kwargs)
        except TaskMissing as exc:
            log.info("%s: %s; nothing to do", stage.__name__, exc)
            return MISSING

    return handler
