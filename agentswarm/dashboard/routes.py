"""The URL table: which method and path go to which endpoint, and which endpoints steer."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentswarm.dashboard import actions, api, history, metrics, preview

ID = r"([A-Za-z0-9_-]{1,64})"


@dataclass(frozen=True)
class Route:
    """One endpoint: GET handlers take (app, db, params, *ids), POST ones (app, db, body, *ids)."""

    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., Any]

    @property
    def steers(self) -> bool:
        """POST endpoints change the swarm and need permission."""
        return self.method == "POST"


def _r(method: str, path: str, handler: Callable[..., Any]) -> Route:
    return Route(method, re.compile("^" + path + "$"), handler)


ROUTES = [
    _r("GET", "/api/summary", api.summary),
    _r("GET", "/api/tasks", api.tasks),
    _r("GET", f"/api/tasks/{ID}", api.task),
    _r("GET", f"/api/tasks/{ID}/transcript", api.transcript),
    _r("GET", "/api/events", api.events),
    _r("GET", "/api/merges", api.merges),
    _r("GET", f"/api/runs/{ID}/main", api.main),
    _r("GET", r"/api/screenshots/([^/]{1,200})", api.screenshot),  # the handler admits only <sha>.png
    _r("GET", "/api/history", history.history),
    _r("GET", "/metrics", metrics.scrape),  # Prometheus text format; the API's Host and token rules
    _r("GET", "/api/previews", preview.previews),
    _r("POST", f"/api/runs/{ID}/stop", actions.stop_run),
    _r("POST", f"/api/runs/{ID}/pause", actions.pause_run),
    _r("POST", f"/api/runs/{ID}/resume", actions.resume_run),
    _r("POST", "/api/tasks", actions.add_task),
    _r("POST", f"/api/tasks/{ID}/cancel", actions.cancel_task),
    _r("POST", f"/api/tasks/{ID}/retry", actions.retry_task),
    _r("POST", "/api/reconcile", actions.reconcile),
]


def match(method: str, path: str) -> tuple[Route | None, tuple[str, ...], bool]:
    """The route for (method, path) with its captured ids, and whether the path exists under another method."""
    other = False
    for route in ROUTES:
        m = route.pattern.match(path)
        if m is None:
            continue
        if route.method == method:
            return route, m.groups(), True
        other = True
    return None, (), other
