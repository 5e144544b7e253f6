"""Real services for tests: this session's Postgres database and Redis db, and real Celery workers.

Registered as a pytest plugin by tests/conftest.py, which points the environment at them first.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.env import PG_ADMIN, REQUIRE, ROOT, TEST_DB, TEST_DB_URL, TEST_REDIS_URL


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _need(port: int, what: str) -> None:
    if not _port_open(port):
        msg = f"{what} is not running on 127.0.0.1:{port}"
        if REQUIRE:
            pytest.fail(msg + " (required in CI)")
        pytest.skip(msg)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A freshly migrated database for this session, dropped at the end."""
    _need(5432, "Postgres")
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{TEST_DB}" with (force)')
        conn.execute(f'create database "{TEST_DB}"')
    from agentswarm.db.migrate import upgrade

    upgrade(TEST_DB_URL)
    yield TEST_DB_URL
    from agentswarm.db.session import get_engine

    get_engine(TEST_DB_URL).dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{TEST_DB}" with (force)')


@pytest.fixture
def db(pg_url):
    """Empty tables before the test; yields the URL."""
    from sqlalchemy import text

    from agentswarm.db.models import Base
    from agentswarm.db.session import get_engine

    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with get_engine(pg_url).begin() as conn:
        conn.execute(text(f"truncate {names} restart identity cascade"))
    return pg_url


@pytest.fixture
def redis_client():
    """The session's Redis db, flushed before the test."""
    _need(6379, "Redis")
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


class WorkerProcess:
    """A real `celery worker` subprocess; stopped (and its group killed) on close."""

    def __init__(self, app: str, queues: str, pool: str = "solo", concurrency: int = 1,
                 env: dict[str, str] | None = None, name: str = "test", log_path: Path | None = None):
        self.log_path = log_path
        self.name = f"{name}-{os.getpid()}-{time.monotonic_ns()}@localhost"
        argv = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, "-P", pool,
                "-c", str(concurrency), "-n", self.name, "--without-heartbeat", "--without-gossip",
                "--without-mingle", "--loglevel=INFO"]
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the worker logs that it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log()[-2000:]}")
            if "ready." in self.log():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready in {timeout}s: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def kill(self, sig: int = 9) -> None:
        """Send a signal to the worker's whole process group."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill(15)
        if self._log is not subprocess.DEVNULL:
            self._log.close()


@pytest.fixture
def celery_worker(tmp_path, redis_client):
    """Factory: start real Celery workers; all are stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(app: str = "agentswarm.queue.app", queues: str = "work", ready: bool = True, **kw):
        w = WorkerProcess(app, queues, log_path=tmp_path / f"worker-{len(started)}.log", **kw)
        started.append(w)
        if ready:
            w.wait_ready()
        return w

    yield start
    for w in started:
        w.stop()
