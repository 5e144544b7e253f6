"""The agents the runner can drive, by the short name in TaskSpec.agent.

Implementations import only the protocol (`agent.base`); this registry imports them, lazily,
so a sandbox image without an external agent's dependencies can still run the built-in one.
"""

from __future__ import annotations

from agentswarm.agent.base import Agent


def get_agent(name: str) -> Agent:
    """The agent selected by TaskSpec.agent: builtin, mini-swe-agent, pi, or cmd:<shell template>."""
    name = (name or "builtin").strip()
    if name == "builtin":
        from agentswarm.agent.builtin import BuiltinAgent

        return BuiltinAgent()
    from agentswarm.agent.external import external_agent

    return external_agent(name)
