"""OpenAI-compatible chat endpoints: the client (client.py), reply parsing, endpoints, routing and costs.

The names most callers need are handed on from client.py; the router and its factory are the
orchestrator's (sandboxes use only the client and the parsing).
"""

from agentswarm.llm.client import (
    ChatClient,
    ChatReply,
    LLMClient,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMProtocolError,
    LLMTimeout,
    ToolCall,
    Usage,
    estimate_cost_usd,
    make_transport,
    normalize_base_url,
    parse_retry_after,
)

__all__ = [
    "ChatClient", "ChatReply", "LLMClient", "LLMConnectionError", "LLMError", "LLMHTTPError", "LLMProtocolError",
    "LLMTimeout", "ToolCall", "Usage", "estimate_cost_usd", "make_transport", "normalize_base_url", "parse_retry_after",
]
