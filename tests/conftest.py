"""The environment for every test, set before any agentswarm module reads its settings.

Each pytest session gets its own database (and a Redis db number) so that concurrent runs do not
collide. The shared fixtures live in tests/support/ and are registered here as plugins.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.support.env import REQUIRE, ROOT, TEST_DB_URL, TEST_REDIS_URL
from tests.support.tiers import mark_tiers

pytest_plugins = ["tests.support.services", "tests.support.runs", "tests.support.gate_hub"]

# Settings are read from the environment: point every child process at the test services too.
for key in list(os.environ):
    if key.startswith(("LLM_", "GIT_REPO_URL", "MAX_WORKERS", "MERGE_STRATEGY", "SANDBOX_", "GATE", "SIM_")):
        del os.environ[key]
# Every path a swarm keeps under var/ (hub, previews, screenshots, deps cache, sandboxes) hangs off
# HUB_PATH and SANDBOX_ROOT: a test that does not name its own gets this session's, never the
# user's ./var (a swarm run in the same clone must not change what a test sees).
SESSION_VAR = Path(tempfile.mkdtemp(prefix="agentswarm-test-var-"))
# The existing suites run the queue as it was before the gate (GATE=off); the gate's own tests turn it on.
# They connect as the shared server's superuser: a role per `prepare` would outlive the session's database
# (roles belong to the whole server); tests/ops/test_secured_services.py makes the swarm's role on a private one.
# Gate runs happen in the merge worker's own threads (GATE_RUNNER=inline) unless a test starts gate workers.
os.environ.update(
    GATE="off",
    GATE_RUNNER="inline",
    HUB_PATH=str(SESSION_VAR / "hub.git"),
    SANDBOX_ROOT=str(SESSION_VAR / "sandboxes"),
    SERVICE_SECRETS_DIR=str(SESSION_VAR / "secrets"),
    DATABASE_OWN_ROLE="false",
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


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Sandboxes left unterminated by a test keep mounts and cgroups outside their directory: release them,
    then remove this session's own var/."""
    import shutil

    from tests.support.leftovers import release_under

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        release_under(factory.getbasetemp())
    release_under(SESSION_VAR)
    shutil.rmtree(SESSION_VAR, ignore_errors=True)
