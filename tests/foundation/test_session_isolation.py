"""Two test sessions on one machine never share a Redis db or a Postgres database (each flushes its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.env import REDIS_DB, ROOT, TEST_DB


def test_a_second_session_takes_another_redis_db_and_database():
    code = "import json; from tests.support import env; print(json.dumps([env.REDIS_DB, env.TEST_DB]))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    other_db, other_database = json.loads(out)
    assert other_db != REDIS_DB and 1 <= other_db <= 15  # this session holds its db's lock
    assert other_database != TEST_DB
