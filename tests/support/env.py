"""Where this test session's services live: its own Postgres database (by pid) and a Redis db it holds.

Imported by tests/conftest.py before any agentswarm module reads its settings.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("AGENTSWARM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_DB = f"agentswarm_test_{os.getpid()}"
TEST_DB_URL = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{TEST_DB}"
REDIS_DBS = range(1, 16)  # db 0 is left to a swarm on the same Redis


def _hold_a_redis_db() -> tuple[int, int]:
    """(db number, fd of its lock): the first of dbs 1-15 no other test session on this machine holds.

    The lock (flock on a file per db) is held for the session's life and released by the kernel when
    it ends, however it ends; the session flushes only the db it holds, so two sessions never collide.
    """
    for db in REDIS_DBS:
        fd = os.open(Path(tempfile.gettempdir()) / f"agentswarm-test-redis-{db}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return db, fd
    raise RuntimeError("all 15 Redis dbs for tests are held by other test sessions on this machine")


REDIS_DB, _REDIS_LOCK_FD = _hold_a_redis_db()
TEST_REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
REQUIRE = os.environ.get("AGENTSWARM_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"
