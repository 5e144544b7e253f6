"""The environment for every test, set before any agentswarm module reads its settings.

Each pytest session gets its own database (and a Redis db number) so that concurrent runs do not
collide. The shared fixtures live in tests/support/ and are registered here as plugins.
"""

from __future__ import annotations

import os

import pytest

from tests.support.env import REQUIRE, ROOT, TEST_DB_URL, TEST_REDIS_URL
from tests.support.tiers import mark_tiers

pytest_plugins = ["tests.support.services", "tests.support.runs"]

# Settings are read from the environment: point every child process at the test services too.
for key in list(os.environ):
    if key.startswith(("LLM_", "GIT_REPO_URL", "MAX_WORKERS", "MERGE_STRATEGY", "SANDBOX_", "GATE", "SIM_")):
        del os.environ[key]
# The existing suites run the queue as it was before the gate (GATE=off); the gate's own tests turn it on.
os.environ.update(
    GATE="off",
    DATABASE_URL=TEST_DB_URL,
    REDIS_URL=TEST_REDIS_URL,
    PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
)


def _bwrap_missing() -> str | None:
    """Why bubblewrap cannot isolate sandboxes here, or None when it can."""
    from agentswarm.sandbox.isolation import IsolationUnavailable, check_bwrap

    try:
        check_bwrap(65534, 65534)
    except IsolationUnavailable as exc:
        return str(exc)
    return None


# Without bubblewrap the suite still runs (unisolated sandboxes) and the isolation tests skip,
# naming the package; in CI, where .ci/run installs it, its absence fails them instead.
BWRAP_MISSING = _bwrap_missing()
if BWRAP_MISSING and not REQUIRE:
    os.environ["SANDBOX_ISOLATION"] = "none"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the tier markers must be on the items by then
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_tiers(items)
    if BWRAP_MISSING and not REQUIRE:
        skip = pytest.mark.skip(reason=f"sandbox isolation unavailable: {BWRAP_MISSING}")
        for item in items:
            if "bwrap" in item.keywords:
                item.add_marker(skip)
