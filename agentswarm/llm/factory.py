"""The one place an LLM client is built from settings (planner, subplanner, reconciler)."""

from __future__ import annotations

from agentswarm.config import Settings, get_settings
from agentswarm.llm import LLMClient


def client_from_settings(settings: Settings | None = None) -> LLMClient:
    """An LLMClient for LLM_BASE_URL with the configured key, model, timeout and retries."""
    s = settings or get_settings()
    return LLMClient(s.llm_base_url, s.llm_api_key or None, s.llm_model,
                     timeout_s=s.llm_timeout_s, max_retries=s.llm_max_retries)
