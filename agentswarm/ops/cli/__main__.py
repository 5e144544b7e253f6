"""`python -m agentswarm.ops.cli`: the `agentswarm` command."""

from agentswarm.ops.cli.base import main

main()
