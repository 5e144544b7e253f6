"""The steering endpoints: stop, pause or resume a run, add a task, cancel or retry a task, ask for a check of main."""

from __future__ import annotations

from typing import Any

import redis
from kombu.exceptions import KombuError
from sqlalchemy.orm import Session

from agentswarm.control import steering
from agentswarm.dashboard.app import DashboardApp, log
from agentswarm.dashboard.web import ApiError, text_field


def stop_run(app: DashboardApp, db: Session, body: dict[str, Any], run_id: str) -> tuple[int, dict]:
    """End an active run with a reason."""
    reason = text_field(body, "reason", "", 1000).strip() or "stopped from the dashboard"
    steering.stop_run(db, run_id, reason)
    return 200, {"run": run_id, "status": "stopped", "reason": reason}


def add_task(app: DashboardApp, db: Session, body: dict[str, Any]) -> tuple[int, dict]:
    """Create a manual (or fix) task in the active run and dispatch it; a repeated `key` returns the first task."""
    description = body.get("description")
    if not isinstance(description, str):
        raise ApiError(400, "description is required and must be a string")
    scope = body.get("scope", [])
    if isinstance(scope, str):
        scope = [p for p in scope.replace(",", "\n").splitlines() if p.strip()]
    if not isinstance(scope, list) or not all(isinstance(p, str) for p in scope) or len(scope) > 50:
        raise ApiError(400, "scope must be a list of at most 50 paths")
    priority = body.get("priority", 3)
    if isinstance(priority, str) and priority.strip().isdigit():
        priority = int(priority)
    run_id = text_field(body, "run", "", 64) or None
    task, created = steering.add_task(db, app.settings, description, scope, priority,
                                      text_field(body, "title", "", steering.MAX_TITLE), run_id,
                                      kind=text_field(body, "kind", "manual", 16) or "manual",
                                      key=text_field(body, "key", "", steering.MAX_KEY + 1) or None)
    return 201 if created else 200, {"task": task.id, "run": task.run_id, "branch": task.branch, "scope": task.scope,
                                     "priority": task.priority, "kind": task.kind, "created": created}


def pause_run(app: DashboardApp, db: Session, body: dict[str, Any], run_id: str) -> tuple[int, dict]:
    """Hold an active run: nothing new starts; work in flight finishes."""
    reason = text_field(body, "reason", "", 1000).strip() or "paused from the dashboard"
    run, changed = steering.pause_run(db, run_id, reason)
    return 200, {"run": run.id, "paused": True, "changed": changed}


def resume_run(app: DashboardApp, db: Session, body: dict[str, Any], run_id: str) -> tuple[int, dict]:
    """Let a paused run go on."""
    run, sent = steering.resume_run(db, run_id, "resumed from the dashboard")
    return 200, {"run": run.id, "paused": False, "sent": len(sent)}


def retry_task(app: DashboardApp, db: Session, body: dict[str, Any], task_id: str) -> tuple[int, dict]:
    """Send a failed or blocked task back to pending."""
    task = steering.retry_task(db, app.settings, task_id, "retried from the dashboard")
    return 200, {"task": task.id, "status": task.status, "max_attempts": task.max_attempts}


def cancel_task(app: DashboardApp, db: Session, body: dict[str, Any], task_id: str) -> tuple[int, dict]:
    """Cancel a pending or blocked task."""
    reason = text_field(body, "reason", "", 1000).strip() or "cancelled from the dashboard"
    task = steering.cancel_task(db, task_id, reason)
    return 200, {"task": task.id, "status": task.status}


def reconcile(app: DashboardApp, db: Session, body: dict[str, Any]) -> tuple[int, dict]:
    """Ask the reconcile worker to check main now ({"force": true}: even a sha it checked already)."""
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(400, "force must be true or false")
    try:
        steering.request_reconcile(force=force)
    except (KombuError, redis.RedisError, OSError) as exc:
        log.warning("reconcile request not sent: %s", exc)
        raise ApiError(503, "the broker (Redis) does not answer: the check was not requested") from None
    return 202, {"requested": "reconcile", "force": force}
