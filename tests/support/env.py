"""Where this test session's services live: its own Postgres database and Redis db (by pid).

Imported by tests/conftest.py before any agentswarm module reads its settings.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = os.environ.get("AGENTSWARM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_DB = f"agentswarm_test_{os.getpid()}"
TEST_DB_URL = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{TEST_DB}"
REDIS_DB = 1 + os.getpid() % 15
TEST_REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
REQUIRE = os.environ.get("AGENTSWARM_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"
