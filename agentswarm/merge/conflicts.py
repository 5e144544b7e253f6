"""Conflict-resolution tasks: a branch that no longer merges goes back through the swarm, capped."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.agent.runner import without_prefix
from agentswarm.config import get_settings
from agentswarm.db.models import Task, TaskKind
from agentswarm.git.landing import MergeResult

CONFLICT_PRIORITY = 1
CONFLICT_TITLE = "Resolve merge conflict"


def conflict_task_for(db: Session, task: Task, result: MergeResult) -> Task | None:
    """Create a conflict-resolution task unless the cap for this task is reached."""
    origin_id = task.origin_id if task.kind == TaskKind.conflict and task.origin_id else task.id
    made = db.execute(select(func.count()).where(Task.origin_id == origin_id,
                                                 Task.kind == TaskKind.conflict)).scalar_one()
    settings = get_settings()
    if made >= settings.max_conflict_tasks:
        return None
    scope = sorted(set(task.scope) | set(result.conflict_files))
    child = Task(
        run_id=task.run_id, origin_id=origin_id, kind=TaskKind.conflict, priority=CONFLICT_PRIORITY,
        title=f"{CONFLICT_TITLE}: {without_prefix(task.title or task.id, CONFLICT_TITLE)}"[:200],
        description=(
            f"The branch {task.branch} of task {task.id} conflicts with main in "
            f"{', '.join(result.conflict_files)}. Re-apply that task's change on top of the current "
            f"main (it is available as origin/{task.branch}; `git diff {result.main_before}...origin/"
            f"{task.branch}` shows it), keeping what main gained meanwhile.\n\nOriginal task:\n{task.description}"
        ),
        scope=scope, acceptance=list(task.acceptance), feature_ids=list(task.feature_ids),
        base_sha=result.main_before, branch="pending", max_attempts=task.max_attempts,
        context={"conflict": {"task_id": task.id, "branch": task.branch,
                              "files": result.conflict_files, "main": result.main_before}},
    )
    db.add(child)
    db.flush()
    child.branch = f"swarm/{child.id}"
    return child
