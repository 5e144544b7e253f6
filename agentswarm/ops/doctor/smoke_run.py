"""The smoke run's child: set up the scratch run, plan, work, merge; one JSON line per stage on stdout.

Its settings come from the environment `smoke.scratch_env` made, so every stage (and the Celery worker it
starts for `work` and `merge`) uses the scratch database, Redis database, hub and sandboxes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agentswarm.ops.doctor.ladder import stop_process

POLL_S = 0.5
WORKER_READY_S = 60


def emit(step: str, ok: bool, detail: str, fix: str = "", *, skip: bool = False) -> None:
    print(json.dumps({"step": step, "ok": ok, "skip": skip, "detail": detail, "fix": fix}), flush=True)


def start_worker(scratch: Path) -> subprocess.Popen:
    """A real Celery worker for `work` and `merge` (two threads), logging to scratch/worker.log; waits for it."""
    log = scratch / "worker.log"
    argv = [sys.executable, "-m", "celery", "-A", "agentswarm.queue.app", "worker", "-Q", "work,merge", "-P",
            "threads", "-c", "2", "-n", f"doctor-smoke-{os.getpid()}@%h", "--without-heartbeat", "--without-gossip",
            "--without-mingle", "--loglevel=INFO"]
    proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + WORKER_READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Celery worker exited {proc.returncode}: {log.read_text(errors='replace')[-300:]}")
        if "ready." in log.read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    stop_worker(proc)
    raise RuntimeError(f"the Celery worker was not ready in {WORKER_READY_S}s (see {log})")


def stop_worker(proc: subprocess.Popen) -> None:
    stop_process(proc, group=True, timeout=30)


def setup(settings: Any) -> str:
    """Schema, hub, the one feature, an active run; returns the run's id."""
    from agentswarm.db.migrate import upgrade
    from agentswarm.db.session import session_scope
    from agentswarm.git.hub import prepare_hub
    from agentswarm.lifecycle.features import sync_features
    from agentswarm.lifecycle.runs import start_run

    upgrade(settings.database_url)
    prepare_hub(None, settings.hub_path, settings.target_repo_path)
    with session_scope() as db:
        sync_features(db, settings.target_repo_path / "FEATURES.json")
        return start_run(db, settings).id


def _task(run_id: str) -> Any:
    from agentswarm.db.models import Task
    from agentswarm.db.session import session_scope

    with session_scope() as db:
        return db.scalars(select(Task).where(Task.run_id == run_id, Task.parent_id.is_(None))
                          .order_by(Task.created_at)).first()


def _wait(check: Any, until: float) -> Any:
    while time.monotonic() < until:
        found = check()
        if found:
            return found
        time.sleep(POLL_S)
    return None


def plan(settings: Any, run_id: str, until: float) -> Any:
    from agentswarm.planning.planner import plan_tick

    started = time.monotonic()
    report: Any = None
    while time.monotonic() < until:
        report = plan_tick(settings)
        task = _task(run_id)
        if task is not None:
            emit("smoke plan", True, f"the planner made task {task.id} “{task.title[:60]}” (scope "
                 f"{', '.join(task.scope[:3])}) in {time.monotonic() - started:.1f}s")
            return task
        time.sleep(1.0)
    emit("smoke plan", False, f"no task planned in time; the last pass: {json.dumps(report, default=str)[:300]}",
         "see the `llm` steps; `agentswarm llm-check` shows what the endpoint answers")
    return None


def work(task_id: str, until: float) -> Any:
    from agentswarm.db.models import HandoffRecord, Task
    from agentswarm.db.session import session_scope

    started = time.monotonic()
    ended = ("complete", "failed", "blocked", "cancelled")

    def done() -> Any:
        with session_scope() as db:
            task = db.get(Task, task_id)
            return task if task is not None and task.status in ended else None

    task = _wait(done, until)
    if task is None:
        emit("smoke work", False, f"task {task_id} did not end in time", "see worker.log")
        return None
    with session_scope() as db:
        h = db.scalars(select(HandoffRecord).where(HandoffRecord.task_id == task_id)
                       .order_by(HandoffRecord.id.desc())).first()
    if task.status != "complete":
        emit("smoke work", False, f"task {task_id} ended {task.status}: {(task.error or task.summary or '?')[:300]}",
             "`agentswarm show` and `logs` in the scratch run are gone: read worker.log")
        return None
    commits = len(h.commits) if h else 0
    emit("smoke work", True, f"task {task_id} complete in {time.monotonic() - started:.0f}s: {commits} commit(s), "
         f"{', '.join((h.files_changed if h else [])[:3])}, {h.llm_calls if h else 0} LLM calls")
    return task


def merge(task_id: str, until: float) -> bool:
    from agentswarm.db.models import MergeAttempt
    from agentswarm.db.session import session_scope

    started = time.monotonic()
    final = ("merged", "conflict", "failed", "rejected", "abandoned")

    def ended() -> Any:
        with session_scope() as db:
            return db.scalars(select(MergeAttempt).where(MergeAttempt.task_id == task_id,
                                                          MergeAttempt.status.in_(final))).first()

    attempt = _wait(ended, until)
    if attempt is None:
        emit("smoke merge", False, f"task {task_id} was not merged in time", "see worker.log")
        return False
    if attempt.status != "merged":
        emit("smoke merge", False, f"the merge ended {attempt.status}: {(attempt.error or '')[:300]}",
             "see worker.log (the gate's output is in it)")
        return False
    gate = attempt.gate.get("result") if isinstance(attempt.gate, dict) else None
    emit("smoke merge", True, f"main moved {(attempt.main_before or '?')[:10]}..{(attempt.main_after or '?')[:10]} "
         f"in {time.monotonic() - started:.0f}s" + (f" (gate {gate})" if gate else " (gate off)"))
    return True


def main(scratch: Path, timeout_s: float) -> int:
    from agentswarm.config import get_settings

    until = time.monotonic() + timeout_s
    settings = get_settings()
    try:
        run_id = setup(settings)
        worker = start_worker(scratch)
    except Exception as exc:  # noqa: BLE001  (reported as the step's one line)
        emit("smoke setup", False, f"{type(exc).__name__}: {str(exc)[:300]}", "see smoke.log")
        return 1
    emit("smoke setup", True, f"scratch run {run_id} on a scratch hub, with a Celery worker for work and merge")
    try:
        task = plan(settings, run_id, until)
        if task is None:
            emit("smoke work", False, "no task to work on", "", skip=True)
            emit("smoke merge", False, "no task to merge", "", skip=True)
            return 1
        if work(task.id, until) is None:
            emit("smoke merge", False, "the task did not complete", "", skip=True)
            return 1
        return 0 if merge(task.id, until) else 1
    finally:
        stop_worker(worker)
