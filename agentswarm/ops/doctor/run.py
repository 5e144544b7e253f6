"""The order of the ladder: every check module's steps, then the smoke run if asked."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentswarm.ops.doctor import agent, agent_call, endpoints, exposure, hub, node, sandboxes, services
from agentswarm.ops.doctor.ladder import Ladder

if TYPE_CHECKING:
    from agentswarm.config import Settings


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def run_doctor(settings: Settings | None = None, *, smoke: bool = False, echo: Callable[[str], Any] = print,
               modal_module: Any = None, smoke_timeout_s: float = 600.0) -> bool:
    """Run every step in order (and the smoke run if asked); True when none failed."""
    if settings is None:
        settings = services.load(echo)
        if settings is None:
            return False
    with Ladder(settings, echo, modal_module) as ladder:
        ladder.resources.callback(_remove_if_empty, Path(settings.sandbox_root).resolve() / "doctor")
        services.check_redis(ladder)
        exposure.check_redis_auth(ladder)
        services.check_postgres(ladder)
        exposure.check_postgres_auth(ladder)
        exposure.check_postgres_role(ladder)
        services.check_schema(ladder)
        hub.check_hub(ladder)
        node.check_node(ladder)
        sandboxes.check_backend(ladder)
        agent.check_agent(ladder)
        node.check_install(ladder)
        endpoints.check_endpoints(ladder)
        agent_call.check_agent_call(ladder)
        if smoke:
            from agentswarm.ops.doctor.smoke import check_smoke

            check_smoke(ladder, timeout_s=smoke_timeout_s)
        echo(ladder.summary())
        return ladder.passed
