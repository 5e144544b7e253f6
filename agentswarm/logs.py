"""Logs as text (the default) or, with LOG_FORMAT=json, one JSON object a line with the task and run ids.

Every line carries `task_id` and `run_id` (null outside a task): the AgentSwarm task a Celery message names
(`run_task` and `merge_branch` take its id first) and that task's run, bound in context variables around each
Celery task (`task_prerun`/`task_postrun`), or by `bound(...)` anywhere else; an event's line carries the
event's own ids (`db.events.record_event`). `celery_id` and `celery_task`
name the Celery message being handled. Threads a task starts do not inherit the ids (a thread starts with an
empty context), so their lines say null.

Wiring: the Celery app (`queue.app.create_app`) calls `connect_celery`; Celery's `after_setup_logger` and
`after_setup_task_logger` signals then put the JSON formatter on the handlers it set up, in workers and beat
alike. The `agentswarm` command calls `configure_cli`. Only the standard library is used.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

TASK_ID: ContextVar[str | None] = ContextVar("agentswarm_task_id", default=None)
RUN_ID: ContextVar[str | None] = ContextVar("agentswarm_run_id", default=None)
TASK_ID_FIRST = ("agentswarm.tasks.run_task", "agentswarm.tasks.merge_branch")  # their first argument: a task id
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "task_id", "run_id",
                                                                          "celery_id", "celery_task"}
_state = {"format": "text"}


@contextmanager
def bound(task_id: str | None = None, run_id: str | None = None) -> Iterator[None]:
    """Lines logged inside carry these ids."""
    tokens = (TASK_ID.set(task_id), RUN_ID.set(run_id))
    try:
        yield
    finally:
        RUN_ID.reset(tokens[1])
        TASK_ID.reset(tokens[0])


def _celery_request() -> tuple[str | None, str | None]:
    try:
        from celery import current_task
    except ImportError:  # pragma: no cover - celery is a dependency
        return None, None
    task = current_task._get_current_object() if current_task else None
    request = getattr(task, "request", None)
    return (getattr(request, "id", None), getattr(task, "name", None)) if request is not None else (None, None)


class ContextFilter(logging.Filter):
    """Adds task_id, run_id, celery_id and celery_task to every record that passes (ids a line was logged with,
    `extra={"task_id": ..., "run_id": ...}` as events do, win over the bound ones)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.task_id = getattr(record, "task_id", None) or TASK_ID.get()
        record.run_id = getattr(record, "run_id", None) or RUN_ID.get()
        record.celery_id, record.celery_task = _celery_request()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, the ids, any `extra` fields, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "run_id"):
            ContextFilter().filter(record)
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "task_id": record.task_id, "run_id": record.run_id,  # type: ignore[attr-defined]
            "celery_id": record.celery_id, "celery_task": record.celery_task,  # type: ignore[attr-defined]
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def use_json(handlers: list[logging.Handler]) -> None:
    """Put the JSON formatter (and the context filter) on these handlers."""
    for handler in handlers:
        handler.setFormatter(JsonFormatter())
        if not any(isinstance(f, ContextFilter) for f in handler.filters):
            handler.addFilter(ContextFilter())


def configure_cli(log_format: str) -> None:
    """The command's logging: with json, INFO and above go to stderr as JSON lines; text leaves Python's default."""
    if log_format != "json":
        return
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h.formatter, JsonFormatter)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        root.addHandler(handler)
    use_json([handler])
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)


def connect_celery(log_format: str) -> None:
    """Bind the ids around every Celery task; with json, format the worker's and beat's log lines as JSON."""
    from celery import signals

    _state["format"] = log_format
    signals.task_prerun.connect(_bind_task, weak=False, dispatch_uid="agentswarm.logs.bind")
    signals.task_postrun.connect(_unbind_task, weak=False, dispatch_uid="agentswarm.logs.unbind")
    signals.after_setup_logger.connect(_json_logger, weak=False, dispatch_uid="agentswarm.logs.root")
    signals.after_setup_task_logger.connect(_json_logger, weak=False, dispatch_uid="agentswarm.logs.task")


def _json_logger(logger: logging.Logger | None = None, **_: Any) -> None:
    if _state["format"] == "json" and logger is not None:
        use_json(list(logger.handlers))


def _bind_task(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    task_id = None
    if getattr(task, "name", None) in TASK_ID_FIRST:
        first = (list(args or []) or [(kwargs or {}).get("task_id")])[0]
        task_id = first if isinstance(first, str) else None
    TASK_ID.set(task_id)
    RUN_ID.set(_run_of(task_id) if task_id and _state["format"] == "json" else None)


def _unbind_task(**_: Any) -> None:
    TASK_ID.set(None)  # a pool thread runs the next task in this same context
    RUN_ID.set(None)


def _run_of(task_id: str) -> str | None:
    """The run of a task, for the log lines only: any failure (no row, no database) leaves it unknown."""
    try:
        from agentswarm.db.models import Task
        from agentswarm.db.session import session_scope

        with session_scope() as db:
            task = db.get(Task, task_id)
            return task.run_id if task is not None else None
    except Exception:  # noqa: BLE001 - a log field must never fail a task
        return None
