"""The security suite runs hostile agents on the same real stack as the e2e tests."""

from tests.e2e.conftest import swarm  # noqa: F401  (the fixture: hub, fake LLM, settings, a run)
