"""The read-only endpoints: summary, tasks, task detail, transcript, events, merges, main's health (JSON), and
the screenshots of green mains (PNG)."""

from __future__ import annotations

import re

import redis
from sqlalchemy.orm import Session

from agentswarm.control import status
from agentswarm.dashboard.app import DashboardApp, log
from agentswarm.dashboard.transcript import parse_transcript
from agentswarm.dashboard.web import ApiError, RawReply, int_param, list_param
from agentswarm.db.models import MergeStatus, Run, Task, TaskStatus
from agentswarm.lifecycle.progress import handoff_status, transcript_of
from agentswarm.queue.broker import queue_lengths
from agentswarm.reconcile.page import PNG_SIGNATURE, screenshots_root

TASK_STATES = {s.value for s in TaskStatus}
MERGE_STATES = {s.value for s in MergeStatus}
SCREENSHOT_NAME = re.compile(r"(?:[0-9a-f]{40}|[0-9a-f]{64})\.png")  # <full commit sha>.png, as the reconciler keeps them
SCREENSHOT_CACHE = "private, max-age=300"  # a sha's screenshot does not change; the page re-renders every poll


def _run(db: Session, params: dict[str, str]) -> Run | None:
    run_id = params.get("run") or None
    run = status.find_run(db, run_id)
    if run_id and run is None:
        raise ApiError(404, f"no run {run_id}")
    return run


def _queues(app: DashboardApp) -> dict:
    try:
        return {"queues": queue_lengths(app.redis()), "queues_error": None}
    except redis.RedisError as exc:
        log.warning("queue depths unavailable: %s", exc)
        return {"queues": None, "queues_error": "Redis does not answer"}


def safe_config(app: DashboardApp, run: Run | None) -> dict:
    """The few settings worth showing (never URLs, keys or tokens)."""
    s, cfg = app.settings, (run.config if run else None) or {}
    return {"model": cfg.get("model", s.llm_model), "workers": cfg.get("max_workers", s.max_workers),
            "merge_strategy": s.merge_strategy.value, "sandbox": s.sandbox_backend.value,
            "unisolated": s.sandbox_backend.value == "local" and s.sandbox_isolation.value == "none",
            "steering": app.token != "" or app.loopback, "token_required": app.token != ""}


def summary(app: DashboardApp, db: Session, params: dict[str, str]) -> dict:
    """The run's counts, throughput, spend against budgets, the gate, queue depths and feature progress."""
    run = _run(db, params)
    base = {"config": safe_config(app, run), "features": status.feature_progress(db), **_queues(app)}
    if run is None:
        return {"run": None, **base}
    data = status.run_summary(db, run)
    data["ended_at"] = run.ended_at.isoformat() if run.ended_at else None
    return {**data, "metrics": status.run_metrics(db, run, data), "gate": status.gate_state(db, run, app.settings),
            "blocked": status.blocked_state(db, run), "costs": status.costs(db, run, app.settings), **base}


def tasks(app: DashboardApp, db: Session, params: dict[str, str]) -> dict:
    """Recent tasks, newest change first; ?status=a,b ?limit=N ?run=ID."""
    run = _run(db, params)
    states = list_param(params, "status", TASK_STATES)
    limit = int_param(params, "limit", 50, 1, status.MAX_LIMIT)
    return {"tasks": status.task_list(db, run.id if run else None, states, limit) if run else []}


def task(app: DashboardApp, db: Session, params: dict[str, str], task_id: str) -> dict:
    """One task with its handoffs and merge attempts."""
    detail = status.task_detail(db, task_id)
    if detail is None:
        raise ApiError(404, f"no task {task_id}")
    return detail


def transcript(app: DashboardApp, db: Session, params: dict[str, str], task_id: str) -> dict:
    """The latest (or ?attempt=N) attempt's transcript as a list of entries: its handoff's, or, before it hands
    off, the lines read from its sandbox so far (`live`; `status` running, or lost when its worker died)."""
    attempt = int_param(params, "attempt", None, 0, 10_000)
    task = db.get(Task, task_id)
    if task is None:
        raise ApiError(404, f"no task {task_id}")
    if attempt is not None and not 1 <= attempt <= task.attempts and handoff_status(db, task_id, attempt) is None:
        raise ApiError(404, f"task {task_id} has no attempt {attempt}")
    shown, text, live = transcript_of(db, task_id, attempt)
    if shown is None:
        return {"task": task_id, "attempt": None, "live": False, **parse_transcript("")}
    if live:
        running = shown == task.attempts and task.status in (TaskStatus.assigned, TaskStatus.running)
        state = "running" if running else "lost"
    else:
        state = handoff_status(db, task_id, shown) or ""
    return {"task": task_id, "attempt": shown, "status": state, "live": live, **parse_transcript(text)}


def events(app: DashboardApp, db: Session, params: dict[str, str]) -> dict:
    """The event feed: ?after=ID returns only newer events (poll with the returned last_id)."""
    run = _run(db, params)
    after = int_param(params, "after", None, 0)
    limit = int_param(params, "limit", 100, 1, status.MAX_LIMIT)
    return status.events_after(db, run.id if run else None, after, limit)


def merges(app: DashboardApp, db: Session, params: dict[str, str]) -> dict:
    """The commit feed: merge attempts, newest first; ?status=merged ?limit=N."""
    run = _run(db, params)
    states = list_param(params, "status", MERGE_STATES)
    limit = int_param(params, "limit", 30, 1, status.MAX_LIMIT)
    return {"merges": status.merge_feed(db, run.id if run else None, limit, states)}


def main(app: DashboardApp, db: Session, params: dict[str, str], run_id: str) -> dict:
    """Main's health in a run: the reconciler's verdict and figures, its newest checks, quarantined tests, and
    the names of the screenshots kept."""
    run = db.get(Run, run_id)
    if run is None:
        raise ApiError(404, f"no run {run_id}")
    return status.main_state(db, run, app.settings)


def screenshot(app: DashboardApp, db: Session, params: dict[str, str], name: str) -> RawReply:
    """A kept screenshot of a green main, `<sha>.png`: only such a name, only a PNG file directly in the
    screenshots directory (no other path, no link out of it); anything else is 404."""
    missing = ApiError(404, "no such screenshot")
    if not SCREENSHOT_NAME.fullmatch(name):
        raise missing
    root = screenshots_root(app.settings.hub_path).resolve()
    path = root / name
    try:
        if path.is_symlink() or path.resolve().parent != root or not path.is_file():
            raise missing
        data = path.read_bytes()
    except OSError:
        raise missing from None
    if not data.startswith(PNG_SIGNATURE):
        raise missing
    return RawReply(data, "image/png", SCREENSHOT_CACHE)
