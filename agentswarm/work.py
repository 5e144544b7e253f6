"""The work stage: drive one sandboxed agent through one task, from take to handoff.

Runs in a `-P threads` worker, which has no Celery time limits and cannot kill a task on
revoke: every deadline here is enforced by this code and by the sandbox's own timeout.
Postgres decides who owns a task; a duplicate message finds the task taken and returns.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import update

from agentswarm.agent.contract import ContractError, Handoff, Limits, LLMSettings, TaskSpec
from agentswarm.config import Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.locks import xact_lock
from agentswarm.db.models import Run, RunStatus, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.db.states import transition
from agentswarm.dispatch import busy_scopes, scopes_overlap
from agentswarm.handoffs import finish_task
from agentswarm.hub import hub_url, main_sha
from agentswarm.sandbox import SandboxBackend, SandboxError, SandboxHandle, get_backend

log = logging.getLogger(__name__)
RUNNER_ARGV = ["-m", "agentswarm.agent.runner", "task.json", "result.json", "--workdir", "repo"]
RUNNER_MARGIN_S = 60  # the runner stops its agent this long before the sandbox's deadline


def backend_config(settings: Settings) -> tuple[str, dict]:
    """SANDBOX_BACKEND and its typed config's fields, from settings."""
    name = settings.sandbox_backend.value
    common = {"create_concurrency": settings.sandbox_create_concurrency,
              "create_rate": settings.sandbox_create_rate}
    if name == "local":
        return name, {**common, "root": settings.sandbox_root.resolve()}
    return name, {**common, "app_name": settings.modal_app_name, "timeout_s": settings.worker_timeout,
                  "cpu": settings.sandbox_cpu, "memory_mb": settings.sandbox_memory_mb}


@functools.lru_cache(maxsize=4)
def _backend(name: str, config_json: str) -> SandboxBackend:
    return get_backend(name, json.loads(config_json))


def backend_for(settings: Settings) -> SandboxBackend:
    """One backend per process and configuration, so its admission control covers every thread."""
    name, cfg = backend_config(settings)
    return _backend(name, json.dumps(cfg, default=str, sort_keys=True))


def sandbox_env(settings: Settings) -> dict[str, str]:
    """What the agent may see: the LLM key (and the git token for a remote hub); nothing else."""
    env = {"LLM_API_KEY": settings.llm_api_key} if settings.llm_api_key else {}
    if settings.git_repo_url and settings.git_token:
        env["GIT_TOKEN"] = settings.git_token
    return env


def build_spec(task: Task, settings: Settings) -> TaskSpec:
    """task.json for this task: no secrets, only what the runner needs."""
    return TaskSpec(
        id=task.id, run_id=task.run_id, title=task.title, description=task.description,
        branch=task.branch, base_sha=task.base_sha or "", repo_url=hub_url(settings.git_repo_url, settings.hub_path),
        scope=list(task.scope), acceptance=list(task.acceptance), priority=task.priority,
        parent_id=task.parent_id, kind=task.kind, feature_ids=list(task.feature_ids),
        context=dict(task.context or {}), agent=settings.agent,
        llm=LLMSettings(base_url=settings.llm_base_url, model=settings.llm_model,
                        max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature,
                        timeout_s=settings.llm_timeout_s),
        limits=Limits(timeout_s=max(30, settings.worker_timeout - RUNNER_MARGIN_S),
                      max_steps=settings.agent_max_steps, max_tokens=settings.agent_max_tokens),
    )


def _take(task_id: str, settings: Settings) -> tuple[Task, str | None] | str:
    """pending -> assigned, or the reason the task is not ours to run."""
    with session_scope() as db:
        task = db.get(Task, task_id)
        if task is None:
            return "missing"
        if task.status != TaskStatus.pending.value:
            return f"not-pending:{task.status}"
        run = db.get(Run, task.run_id)
        if run is None or run.status != RunStatus.active.value:
            transition(db, task_id, "pending", "cancelled", error="run ended before the task started")
            return "cancelled"
        # Takes in one run are serialised so that two overlapping scopes never both start.
        xact_lock(db, f"take:{task.run_id}")
        db.refresh(task)
        if task.status != TaskStatus.pending.value:
            return f"not-pending:{task.status}"
        if _in_flight_overlap(db, task):
            db.execute(update(Task).where(Task.id == task.id).values(enqueued_at=None))
            return "held"
        old_sandbox = task.sandbox_id
        if not transition(db, task_id, "pending", "assigned", attempts=task.attempts + 1,
                          heartbeat_at=datetime.now(UTC), sandbox_id=None, error=None):
            return "lost-race"
        db.refresh(task)
        record_event(db, "task.assigned", f"attempt {task.attempts}", run_id=task.run_id, task_id=task.id)
        return task, old_sandbox


def _in_flight_overlap(db, task: Task) -> bool:
    busy = busy_scopes(db, task.run_id, exclude=task.id, include_sent=False)
    return any(scopes_overlap(task.scope, s) for s in busy)


class Heartbeats:
    """One thread per process writes heartbeat_at for every task this process is running.

    A hundred work threads share it: one UPDATE per interval instead of a hundred, so the
    connection pool is not spent on keeping tasks alive.
    """

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._beating: dict[str, str] = {}  # task id -> sandbox id
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval_s)
            with self._lock:
                beating = dict(self._beating)
            if beating:
                self.beat(beating)

    def beat(self, beating: dict[str, str]) -> None:
        """Mark these (task, sandbox) pairs alive now; a task that moved on is left alone."""
        try:
            with session_scope() as db:
                db.execute(update(Task).where(
                    Task.id.in_(list(beating)), Task.status == TaskStatus.running.value,
                    Task.sandbox_id.in_(list(beating.values())),
                ).values(heartbeat_at=datetime.now(UTC)))
        except Exception:  # a missed beat is not fatal; the next one may succeed
            log.warning("heartbeat for %d tasks failed", len(beating), exc_info=True)

    @contextmanager
    def keep_alive(self, task_id: str, sandbox_id: str) -> Iterator[None]:
        """Beat for this task while the block runs."""
        with self._lock:
            self._beating[task_id] = sandbox_id
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="heartbeats", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._beating.pop(task_id, None)


@functools.lru_cache(maxsize=4)
def heartbeats(interval_s: float) -> Heartbeats:
    """The process's heartbeat writer."""
    return Heartbeats(interval_s)


def _reap(backend: SandboxBackend, sandbox_id: str | None) -> None:
    if not sandbox_id:
        return
    try:
        backend.terminate(sandbox_id)
    except SandboxError:
        log.warning("could not reap old sandbox %s", sandbox_id, exc_info=True)


def failure(task_id: str, error: str, started: float) -> Handoff:
    """A failed handoff made by the orchestrator when the sandbox gave none."""
    return Handoff(task_id=task_id, status="failed", error=error[:4000], summary=error[:500],
                   duration_s=round(time.monotonic() - started, 3))


def _drive(backend: SandboxBackend, sb: SandboxHandle, spec: TaskSpec, settings: Settings) -> Handoff:
    started = time.monotonic()
    backend.put_file(sb, "task.json", json.dumps(spec.to_dict(), indent=2).encode())
    res = backend.exec(sb, ["python", *RUNNER_ARGV], timeout_s=settings.worker_timeout)
    raw = backend.get_file(sb, "result.json")
    if res.timed_out:
        return failure(spec.id, f"timed out after {settings.worker_timeout}s; sandbox stopped", started)
    if raw is None:
        tail = (res.stderr or res.stdout)[-1500:]
        return failure(spec.id, f"runner exited {res.exit_code} without result.json: {tail}", started)
    try:
        return Handoff.from_dict(json.loads(raw))
    except (ValueError, ContractError) as exc:
        return failure(spec.id, f"unreadable result.json: {exc}", started)


def _decompose(task_id: str, settings: Settings) -> bool:
    """Let the subplanner split a large task; True when children were created."""
    from agentswarm.planning.llm_factory import client_from_settings
    from agentswarm.planning.subplanner import maybe_decompose

    with session_scope() as db:
        task = db.get(Task, task_id)
        children = maybe_decompose(db, task, client_from_settings(settings), settings=settings)
        if children:
            record_event(db, "task.decomposed", f"{len(children)} children", run_id=task.run_id,
                         task_id=task.id, children=[c.id for c in children])
        return bool(children)


def run_task(task_id: str, settings: Settings | None = None) -> str:
    """Take the task, run it in a sandbox, store the handoff; returns what happened."""
    settings = settings or get_settings()
    taken = _take(task_id, settings)
    if isinstance(taken, str):
        log.info("task %s not run: %s", task_id, taken)
        return taken
    task, old_sandbox = taken
    backend = backend_for(settings)
    _reap(backend, old_sandbox)
    with session_scope() as db:
        if not transition(db, task_id, "assigned", "running"):
            return "lost-while-assigned"
    if _decompose(task_id, settings):
        return "decomposed"
    started = time.monotonic()
    sb: SandboxHandle | None = None
    try:
        sb = backend.create(run_id=task.run_id, task_id=task.id, attempt=task.attempts,
                            env=sandbox_env(settings))
        # Start from main as it is now, not as it was when planned: fewer conflicts at merge time.
        task.base_sha = main_sha(settings.hub_path) or task.base_sha
        with session_scope() as db:  # recorded before any agent work, so a crash can be reaped
            db.execute(update(Task).where(Task.id == task_id).values(sandbox_id=sb.id, base_sha=task.base_sha))
            record_event(db, "sandbox.created", sb.id, run_id=task.run_id, task_id=task_id)
        with heartbeats(settings.heartbeat_interval_s).keep_alive(task_id, sb.id):
            handoff = _drive(backend, sb, build_spec(task, settings), settings)
    except Exception as exc:  # the sandbox or its provider failed: the task fails, the worker lives
        log.exception("task %s: sandbox failure", task_id)
        handoff = failure(task_id, f"sandbox error: {type(exc).__name__}: {exc}", started)
    finally:
        if sb is not None:
            _reap(backend, sb.id)
    return finish_task(task_id, task.attempts, sb.id if sb else None, handoff, settings)
