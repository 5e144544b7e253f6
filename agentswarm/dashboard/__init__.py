"""The live web dashboard: a JSON API over Postgres and Redis, steering controls, and a static page."""

from agentswarm.dashboard.server import make_server, serve

__all__ = ["make_server", "serve"]
