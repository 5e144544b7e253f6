"""Tasks put straight into a run (as a person would add them), and their states."""

from __future__ import annotations

from sqlalchemy import select

from agentswarm.config import get_settings
from agentswarm.db import Task, session_scope
from agentswarm.db.events import record_event
from agentswarm.git.hub import main_sha
from agentswarm.lifecycle.dispatch import dispatch_pending


def add_tasks(db_url, run_id, scopes, **kw) -> list[str]:
    """Manual tasks with these scopes, dispatched after commit."""
    ids = []
    with session_scope(db_url) as s:
        for scope in scopes:
            t = Task(run_id=run_id, title=f"write {scope[0]}", description=f"Create {scope}.",
                     scope=scope, branch="x", base_sha=main_sha(get_settings().hub_path), **{"kind": "manual", **kw})
            s.add(t)
            s.flush()
            t.branch = f"swarm/{t.id}"
            ids.append(t.id)
            record_event(s, "task.created", "test", run_id=run_id, task_id=t.id)
        dispatch_pending(s, run_id)
    return ids


def statuses(db_url, ids) -> dict[str, str]:
    with session_scope(db_url) as s:
        return dict(s.execute(select(Task.id, Task.status).where(Task.id.in_(ids))).all())
