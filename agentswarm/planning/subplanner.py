"""The subplanner: split a task that is too large into children inside its scope.

Bounded three ways, so a model that always splits cannot fan out: depth (SUBPLANNER_MAX_DEPTH),
children per task (SUBPLANNER_MAX_CHILDREN) and tasks per run (RUN_MAX_TASKS). A decomposed
parent waits in `running` and ends when its children have all ended (`lifecycle.parents`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.models import Feature, Run, RunStatus, Task, TaskKind
from agentswarm.db.text import stored_text
from agentswarm.lifecycle.budgets import check_budgets, tasks_left
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.lifecycle.parents import children_of
from agentswarm.llm import ChatClient
from agentswarm.planning.calls import ask, record
from agentswarm.planning.parsing import Rejection, UnparseableReply, parse_tasks
from agentswarm.planning.repo_state import read_main
from agentswarm.planning.store import record_rejections, store_task
from agentswarm.prompts import render_messages

SPLIT_MIN_PATHS = 4
SPLIT_LONG_DESCRIPTION = 3000
SPLITTABLE_KINDS = frozenset({TaskKind.feature, TaskKind.fix})


def too_large(task: Task, settings: Settings) -> bool:
    """The one heuristic: a feature/fix task above the depth cap's floor with many paths or a long description."""
    if task.kind not in SPLITTABLE_KINDS or task.depth >= settings.subplanner_max_depth:
        return False
    paths = len(task.scope or [])
    if paths < 2:  # children must fit inside the parent's scope: one path cannot be shared out
        return False
    return paths >= SPLIT_MIN_PATHS or len(task.description or "") > SPLIT_LONG_DESCRIPTION


def inside_scope(path: str, scope: list[str]) -> bool:
    """True when path equals a scope path or lies under one."""
    return any(path == s.strip("/") or path.startswith(s.strip("/") + "/") for s in scope)


def _task_input(task: Task) -> dict:
    return {"title": task.title, "description": task.description, "scope": task.scope,
            "acceptance": task.acceptance, "priority": task.priority, "feature_ids": task.feature_ids,
            "kind": task.kind}


def maybe_decompose(session: Session, task: Task, client: ChatClient, *,
                    settings: Settings | None = None) -> list[Task] | None:
    """The stored children of `task` (pending, dispatched after commit), or None to run it whole."""
    settings = settings or get_settings()
    existing = children_of(session, task.id)
    if existing:  # a second delivery of the same task: the split already happened
        return existing
    if not too_large(task, settings):
        return None
    run = session.get(Run, task.run_id)
    if run is None or run.status != RunStatus.active:
        return None
    room = min(settings.subplanner_max_children, tasks_left(session, run))
    hit = check_budgets(session, run, settings)
    if room < 2 or (hit is not None and not hit.drain):
        record_event(session, "subplanner.capped", hit.reason if hit else f"room for {room} children",
                     run_id=run.id, task_id=task.id)
        return None
    main = read_main(settings.hub_path)
    messages = render_messages("subplanner", task=_task_input(task), file_tree=main.file_tree(),
                               max_children=room, depth=task.depth, max_depth=settings.subplanner_max_depth)
    session.commit()  # hand the connection back while the model thinks; the lock below re-checks
    outcome = ask(client, messages, settings, batch=room)
    record(session, outcome, run_id=run.id, task_id=task.id, role="subplanner", settings=settings)
    if not outcome.ok:
        record_event(session, "subplanner.llm_error", outcome.error or "", run_id=run.id, task_id=task.id)
        return None
    known = set(session.scalars(select(Feature.id))) | set(task.feature_ids or [])
    try:
        parsed = parse_tasks(outcome.text, known, room)
    except UnparseableReply as exc:
        record_event(session, "subplanner.unparseable", stored_text(str(exc), 500, settings), run_id=run.id,
                     task_id=task.id)
        return None
    kept, rejected = [], list(parsed.rejected)
    for i, draft in enumerate(parsed.tasks):
        outside = [p for p in draft.scope if not inside_scope(p, task.scope)]
        if outside:
            rejected.append(Rejection(i, f"scope escapes the parent's: {', '.join(outside)[:200]}", draft.title))
        else:
            kept.append(draft)
    record_rejections(session, rejected, source="subplanner", run_id=run.id, task_id=task.id)
    if len(kept) < 2:  # one child doing the parent's work only adds a merge
        record_event(session, "subplanner.kept_whole", f"{len(kept)} usable children", run_id=run.id,
                     task_id=task.id)
        return None
    # Lock the parent, then look again: a twin delivery may have split it while we waited on the model.
    session.execute(select(Task.id).where(Task.id == task.id).with_for_update())
    if children_of(session, task.id):
        return children_of(session, task.id)
    children = []
    for draft in kept:
        draft.kind, draft.feature_ids = task.kind, list(task.feature_ids or [])
        children.append(store_task(session, draft, run_id=run.id, base_sha=task.base_sha or main.sha,
                                   settings=settings, parent=task, context={"planned_by": "subplanner"}))
    task.context = {**(task.context or {}), "decomposed": [c.id for c in children]}
    dispatch_pending(session, run.id)
    return children
