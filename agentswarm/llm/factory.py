"""The one place an LLM client is built from settings (planner, subplanner, reconciler, llm-check).

Every client routes over LLM_ENDPOINTS (or LLM_BASE_URL as a one-endpoint list) with its slots and
circuits in Redis, shared by every process of the swarm; a process that cannot reach Redis keeps them
in memory (and says so).
"""

from __future__ import annotations

import functools
import logging

import redis

from agentswarm.config import Settings, get_settings
from agentswarm.llm.endpoints import Endpoint, load_endpoints
from agentswarm.llm.router import RoutedClient, Router
from agentswarm.llm.routing_state import LocalRoutingState, RedisRoutingState, RoutingState

log = logging.getLogger("agentswarm.llm")


def routing_state(redis_url: str) -> RoutingState:
    """Redis state at `redis_url`, or this process's own when Redis does not answer."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    try:
        client.ping()
    except redis.RedisError as exc:
        log.warning("Redis unreachable (%s): LLM endpoint slots and circuits are this process's only",
                    type(exc).__name__)
        return LocalRoutingState()
    return RedisRoutingState(client)


@functools.lru_cache(maxsize=8)
def _router(endpoints: tuple[Endpoint, ...], redis_url: str, timeout_s: float) -> Router:
    return Router(list(endpoints), routing_state(redis_url), default_timeout_s=timeout_s)


def router_from_settings(settings: Settings | None = None) -> Router:
    """This process's router over the configured endpoints (one per endpoint list and Redis)."""
    s = settings or get_settings()
    endpoints = load_endpoints(s)
    if not endpoints:
        raise ValueError("LLM base URL is empty and no LLM_ENDPOINTS are set: no model to call")
    return _router(tuple(endpoints), s.redis_url, s.llm_timeout_s)


def client_from_settings(settings: Settings | None = None, role: str = "planner") -> RoutedClient:
    """A client for `role` (planner, subplanner, worker, reconciler) over the configured endpoints."""
    s = settings or get_settings()
    return RoutedClient(router_from_settings(s), role, settings=s, max_retries=s.llm_max_retries)
