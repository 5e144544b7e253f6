"""Heartbeats: one thread per process keeps every task this process runs alive in Postgres."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import update

from agentswarm.db.models import Task, TaskStatus
from agentswarm.db.session import session_scope

log = logging.getLogger(__name__)


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
                    Task.id.in_(list(beating)), Task.status == TaskStatus.running,
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
