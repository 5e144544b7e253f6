"""`python -m agentswarm`: the same as the `agentswarm` command."""

from agentswarm.ops.cli import main

main()
