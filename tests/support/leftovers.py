"""Sandboxes a test left unterminated are released when the session ends (agentswarm/sandbox/leftovers.py)."""

from agentswarm.sandbox.leftovers import release_under

__all__ = ["release_under"]
