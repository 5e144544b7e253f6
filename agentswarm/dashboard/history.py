"""`GET /api/history`: a run's metric snapshots (agentswarm/monitor/snapshots.py) as time series for the charts.

?run=ID (default: the run the summary shows) ?hours=H (the window; default: since the run started, at most
DEFAULT_HOURS) ?points=N (at most this many points, default 120): the window is cut into N equal buckets and
each bucket's newest snapshot stands for it, so a long run costs the page the same as a short one, and a young
run is shown in detail. Values are the snapshot's own; counts that are totals
(tokens, dollars, gate seconds) stay totals, and `main` is 1 for green, 0 for red, null for no verdict.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.control import status
from agentswarm.dashboard.app import DashboardApp
from agentswarm.dashboard.web import ApiError, int_param
from agentswarm.db.models import MetricSnapshot

DEFAULT_HOURS = 6
MIN_WINDOW_S = 60.0
SCALARS = ("landed_last_hour", "in_flight", "pending", "tokens", "cost_usd", "gate_seconds")
MAX_HOURS = 24 * 30
MAX_POINTS = 1000
MAIN_VALUE = {"green": 1, "red": 0}


def history(app: DashboardApp, db: Session, params: dict[str, str]) -> dict:
    """The run's series over the window, oldest first: `t` (seconds since the epoch) and one list per figure."""
    run_id = params.get("run") or None
    run = status.find_run(db, run_id)
    if run_id and run is None:
        raise ApiError(404, f"no run {run_id}")
    hours = int_param(params, "hours", None, 1, MAX_HOURS)
    points = int_param(params, "points", 120, 2, MAX_POINTS)
    if run is None:
        return {"run": None, "hours": hours or DEFAULT_HOURS, "t": [], "series": {}}
    now = datetime.now(UTC)
    if hours is not None:
        since = now - timedelta(hours=hours)
    else:
        end = run.ended_at or now
        since = max(run.started_at, now - timedelta(hours=DEFAULT_HOURS)) if run.started_at else end
        since = min(since, end - timedelta(seconds=MIN_WINDOW_S))
    rows = snapshot_series(db, run.id, since, now, points)
    window = (now - since).total_seconds()
    return {"run": run.id, "hours": round(window / 3600, 4), "from": round(since.timestamp(), 3),
            "to": round(now.timestamp(), 3), "step_s": round(window / points, 3),
            "retention_hours": app.settings.snapshot_retention_hours, **series_of(rows)}


def snapshot_series(db: Session, run_id: str, since: datetime, until: datetime,
                    points: int) -> list[tuple[datetime, dict[str, Any]]]:
    """Each bucket's newest snapshot in [since, until], oldest first (at most `points` rows)."""
    step = max((until - since).total_seconds() / points, 0.001)
    bucket = func.floor((func.extract("epoch", MetricSnapshot.taken_at) - since.timestamp()) / step)
    newest_first = func.row_number().over(partition_by=bucket, order_by=(MetricSnapshot.taken_at.desc(),
                                                                        MetricSnapshot.id.desc()))
    inner = (select(MetricSnapshot.taken_at, MetricSnapshot.data, newest_first.label("n"))
             .where(MetricSnapshot.run_id == run_id, MetricSnapshot.taken_at >= since,
                    MetricSnapshot.taken_at <= until).subquery())
    q = select(inner.c.taken_at, inner.c.data).where(inner.c.n == 1).order_by(inner.c.taken_at)
    return [(at, data or {}) for at, data in db.execute(q).all()]


def series_of(rows: list[tuple[datetime, dict[str, Any]]]) -> dict[str, Any]:
    """Rows as columns: `t` and `series` (the scalars, `main`, and `queues` as one list per queue)."""
    series: dict[str, Any] = {name: [_number(_field(d, name)) for _, d in rows] for name in SCALARS}
    series["main"] = [MAIN_VALUE.get(str(d.get("main"))) for _, d in rows]
    names = sorted({q for _, d in rows for q in (d.get("queues") or {})})
    series["queues"] = {q: [_number((d.get("queues") or {}).get(q)) if d.get("queues") is not None else None
                            for _, d in rows] for q in names}
    return {"t": [round(at.timestamp(), 3) for at, _ in rows], "series": series}


def _field(data: dict[str, Any], name: str) -> Any:
    """A figure, read also from snapshots taken before it existed (they were events with fewer keys)."""
    if name in data:
        return data[name]
    tasks = data.get("tasks") or {}
    if name == "landed_last_hour":
        return data.get("merged_last_hour")
    if name == "in_flight" and tasks:
        return int(tasks.get("assigned", 0)) + int(tasks.get("running", 0))
    if name == "pending" and tasks:
        return int(tasks.get("pending", 0))
    return None


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None
