"""Test and demo helpers: a fake OpenAI-compatible LLM server and the swarm simulator behind it."""

from __future__ import annotations

from typing import Any

__all__ = ["Fault", "FakeLLMServer", "serve_forever", "simulate"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `python -m agentswarm.demo.fake_llm` does not import the module twice.
    if name == "Fault":
        from agentswarm.demo.faults import Fault

        return Fault
    if name in ("FakeLLMServer", "serve_forever"):
        from agentswarm.demo import fake_llm

        return getattr(fake_llm, name)
    if name == "simulate":
        from agentswarm.demo.simulator import simulate

        return simulate
    raise AttributeError(f"module 'agentswarm.demo' has no attribute {name!r}")
