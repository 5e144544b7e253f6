"""Celery entry points: ids in, the stage does the work. Each is safe to run twice.

Stages re-read Postgres and return when the work is already done; messages carry ids only.
Nothing imports this module but the Celery app (`include`): stages send by name
(`agentswarm.queue.send`), so no stage depends on its entry point.
"""

from __future__ import annotations

from agentswarm.queue.app import app
from agentswarm.queue.names import MERGE_BRANCH, MONITOR_TICK, PLAN_TICK, RECONCILE_TICK, RUN_TASK


@app.task(name=PLAN_TICK)
def plan_tick() -> dict:
    """Beat: plan more work for every active run that has room."""
    from agentswarm.planning.planner import plan_tick as stage

    return stage()


@app.task(name=RUN_TASK, acks_late=True, reject_on_worker_lost=True)
def run_task(task_id: str) -> str:
    """Work: drive one sandboxed agent through one task."""
    from agentswarm.work.stage import work_on

    return work_on(task_id)


@app.task(name=MERGE_BRANCH, acks_late=True, reject_on_worker_lost=True)
def merge_branch(task_id: str) -> str:
    """Merge: land a complete task's branch on main."""
    from agentswarm.merge.queue import merge_task

    return merge_task(task_id)


@app.task(name=RECONCILE_TICK)
def reconcile_tick(force: bool = False) -> dict:
    """Beat (and on demand): the slow checks of main; a red main's culprit reverted, or fix tasks."""
    from agentswarm.reconcile.tick import reconcile_tick as stage

    return stage(force=bool(force))


@app.task(name=MONITOR_TICK)
def monitor_tick() -> dict:
    """Beat: time out stuck tasks, re-send lost messages, reap sandboxes, record metrics."""
    from agentswarm.monitor.tick import monitor_tick as stage

    return stage()
