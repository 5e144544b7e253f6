"""The subplanner: split a task that is too large into children inside its scope; settle the parent.

Bounded three ways, so a model that always splits cannot fan out: depth (SUBPLANNER_MAX_DEPTH),
children per task (SUBPLANNER_MAX_CHILDREN) and tasks per run (RUN_MAX_TASKS). A decomposed
parent waits in `running` and ends when its children have all ended.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.models import Feature, Run, RunStatus, Task, TaskKind, TaskStatus
from agentswarm.db.states import TERMINAL, transition
from agentswarm.dispatch import dispatch_pending
from agentswarm.feature_store import mark_features_failed
from agentswarm.llm import LLMClient
from agentswarm.planning.budget import check_budgets, tasks_left
from agentswarm.planning.calls import ask, record
from agentswarm.planning.parsing import Rejection, UnparseableReply, parse_tasks
from agentswarm.planning.repo_state import read_main
from agentswarm.planning.store import record_rejections, store_task
from agentswarm.prompts import render_messages

SPLIT_MIN_PATHS = 4
SPLIT_LONG_DESCRIPTION = 3000
SPLITTABLE_KINDS = frozenset({TaskKind.feature.value, TaskKind.fix.value})


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


def _children(session: Session, parent_id: str) -> list[Task]:
    return list(session.scalars(select(Task).where(Task.parent_id == parent_id).order_by(Task.created_at)
                                .execution_options(populate_existing=True)))


def _task_input(task: Task) -> dict:
    return {"title": task.title, "description": task.description, "scope": task.scope,
            "acceptance": task.acceptance, "priority": task.priority, "feature_ids": task.feature_ids,
            "kind": task.kind}


def maybe_decompose(session: Session, task: Task, client: LLMClient, *,
                    settings: Settings | None = None) -> list[Task] | None:
    """The stored children of `task` (pending, dispatched after commit), or None to run it whole."""
    settings = settings or get_settings()
    existing = _children(session, task.id)
    if existing:  # a second delivery of the same task: the split already happened
        return existing
    if not too_large(task, settings):
        return None
    run = session.get(Run, task.run_id)
    if run is None or run.status != RunStatus.active.value:
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
    outcome = ask(client, messages, settings)
    record(session, outcome, run_id=run.id, task_id=task.id, role="subplanner", settings=settings)
    if not outcome.ok:
        record_event(session, "subplanner.llm_error", outcome.error or "", run_id=run.id, task_id=task.id)
        return None
    known = set(session.scalars(select(Feature.id))) | set(task.feature_ids or [])
    try:
        parsed = parse_tasks(outcome.text, known, room)
    except UnparseableReply as exc:
        record_event(session, "subplanner.unparseable", str(exc)[:500], run_id=run.id, task_id=task.id)
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
    if _children(session, task.id):
        return _children(session, task.id)
    children = []
    for draft in kept:
        draft.kind, draft.feature_ids = task.kind, list(task.feature_ids or [])
        children.append(store_task(session, draft, run_id=run.id, base_sha=task.base_sha or main.sha,
                                   settings=settings, parent=task, context={"planned_by": "subplanner"}))
    task.context = {**(task.context or {}), "decomposed": [c.id for c in children]}
    dispatch_pending(session, run.id)
    return children


def _summary(children: list[Task]) -> str:
    counts: dict[str, int] = {}
    for c in children:
        counts[c.status] = counts.get(c.status, 0) + 1
    head = "children: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines = [f"- {c.id} {c.title[:80]}: {(c.error or c.summary or '')[:200]}"
             for c in children if c.status != TaskStatus.complete.value]
    return "\n".join([head, *lines])[:4000]


def settle_parent(session: Session, parent_id: str) -> str | None:
    """When every child has ended, move the running parent to complete/failed/blocked; else None. Idempotent."""
    session.flush()
    parent = session.scalar(select(Task).where(Task.id == parent_id).with_for_update()
                            .execution_options(populate_existing=True))
    if parent is None or parent.status != TaskStatus.running.value:
        return None
    children = _children(session, parent_id)
    if not children or any(TaskStatus(c.status) not in TERMINAL for c in children):
        return None
    statuses = {c.status for c in children}
    if statuses == {TaskStatus.complete.value}:
        final = TaskStatus.complete
    elif TaskStatus.failed.value in statuses:
        final = TaskStatus.failed
    else:
        final = TaskStatus.blocked
    summary = _summary(children)
    if not transition(session, parent_id, "running", final, summary=summary,
                      error=None if final is TaskStatus.complete else summary):
        return None
    record_event(session, f"task.{final.value}", summary.splitlines()[0], run_id=parent.run_id, task_id=parent_id,
                 children={c.id: c.status for c in children})
    if final is TaskStatus.failed:
        mark_features_failed(session, parent.feature_ids or [])
    if parent.parent_id:
        settle_parent(session, parent.parent_id)
    return final.value

