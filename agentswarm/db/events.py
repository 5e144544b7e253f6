"""The append-only event feed."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from agentswarm.db.models import Event
from agentswarm.db.text import stored_data, stored_text

log = logging.getLogger("agentswarm.events")


def record_event(
    session: Session, kind: str, message: str = "", *, run_id: str | None = None,
    task_id: str | None = None, **data: Any,
) -> Event:
    """Add one event to the feed (committed with the caller's transaction) and log it.

    The message and data are scrubbed of secrets and cleaned of NUL before they are stored or logged.
    """
    message = stored_text(message or "")
    data = stored_data(data)
    ev = Event(run_id=run_id, task_id=task_id, kind=kind, message=message, data=data)
    session.add(ev)
    log.info("%s %s%s", kind, f"[{task_id}] " if task_id else "", message,
             extra={"task_id": task_id, "run_id": run_id})  # for JSON logs (agentswarm/logs.py)
    return ev
