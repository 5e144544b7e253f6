"""The environment for every test, set before any agentswarm module reads its settings.

Each pytest session gets its own database (and a Redis db number) so that concurrent runs do not
collide. The shared fixtures live in tests/support/ and are registered here as plugins.
"""

from __future__ import annotations

import os

from tests.support.env import ROOT, TEST_DB_URL, TEST_REDIS_URL

pytest_plugins = ["tests.support.services", "tests.support.runs"]

# Settings are read from the environment: point every child process at the test services too.
for key in list(os.environ):
    if key.startswith(("LLM_", "GIT_REPO_URL", "MAX_WORKERS", "MERGE_STRATEGY", "SANDBOX_")):
        del os.environ[key]
os.environ.update(
    DATABASE_URL=TEST_DB_URL,
    REDIS_URL=TEST_REDIS_URL,
    PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
)
