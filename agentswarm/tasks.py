"""Celery entry points: ids in, the stage does the work. Each is safe to run twice.

Stages re-read Postgres and return when the work is already done; messages carry ids only.
"""

from __future__ import annotations

import logging

from agentswarm.celery_app import app

log = logging.getLogger(__name__)


@app.task(name="agentswarm.tasks.plan_tick")
def plan_tick() -> dict:
    """Beat: plan more work for every active run that has room."""
    from agentswarm.planning.planner import plan_tick as stage

    return stage()


@app.task(name="agentswarm.tasks.run_task", acks_late=True, reject_on_worker_lost=True)
def run_task(task_id: str) -> str:
    """Work: drive one sandboxed agent through one task."""
    from agentswarm.work import run_task as stage

    return stage(task_id)


@app.task(name="agentswarm.tasks.merge_branch", acks_late=True, reject_on_worker_lost=True)
def merge_branch(task_id: str) -> str:
    """Merge: land a complete task's branch on main."""
    from agentswarm.merge import merge_task as stage

    return stage(task_id)


@app.task(name="agentswarm.tasks.reconcile_tick")
def reconcile_tick() -> dict:
    """Beat: build and test main, turn failures into fix tasks."""
    from agentswarm.reconciler import reconcile_tick as stage

    return stage()


@app.task(name="agentswarm.tasks.monitor_tick")
def monitor_tick() -> dict:
    """Beat: time out stuck tasks, re-send lost messages, reap sandboxes, record metrics."""
    from agentswarm.monitor import monitor_tick as stage

    return stage()
