"""The `agentswarm` command, by command group: setup.py (services, schema, doctor, the demo model, prepare,
swarm, the dashboard), watch.py (status, features, main's check) and steer.py (runs and tasks). base.py
holds the group and `main`, the entry point."""

from agentswarm.ops.cli import setup, steer, watch  # noqa: F401 - each registers its commands on `cli`
from agentswarm.ops.cli.base import cli, main

__all__ = ["cli", "main"]
