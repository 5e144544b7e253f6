"""History: the monitor's snapshots become time series (GET /api/history), downsampled, and their table stays
bounded (SNAPSHOT_RETENTION_HOURS, SNAPSHOT_MAX_ROWS) by the monitor's own tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from agentswarm.config import load_settings
from agentswarm.db.models import Event, MetricSnapshot, Run, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.monitor.snapshots import FIELDS, prune_snapshots, record_snapshot
from agentswarm.monitor.tick import monitor_tick
from agentswarm.queue.send import send_run_task


def _snap(db_url, redis_client, run_id, at):
    with session_scope(db_url) as s:
        return record_snapshot(s, redis_client, s.get(Run, run_id), at=at).data


def test_snapshots_of_a_run_become_series(start_dashboard, sample, db, redis_client):
    now = datetime.now(UTC)
    first = _snap(db, redis_client, sample, now - timedelta(minutes=30))
    with session_scope(db) as s:  # between two ticks: two pending tasks start running, and a message waits
        ids = s.scalars(select(Task.id).where(Task.run_id == sample, Task.status == TaskStatus.pending).limit(2)).all()
        s.execute(update(Task).where(Task.id.in_(ids)).values(status=TaskStatus.running))
    send_run_task(ids[0], 3)
    second = _snap(db, redis_client, sample, now - timedelta(minutes=15))
    assert set(FIELDS) <= set(first) and second["in_flight"] == first["in_flight"] + 2
    assert second["pending"] == first["pending"] - 2 and second["queues"]["work"] == first["queues"]["work"] + 1
    assert first["main"] == "green" and first["gate_seconds"] > 0 and first["tokens"] > 0 and first["cost_usd"] > 0

    got = start_dashboard().get("/api/history?hours=1").json()
    assert got["run"] == sample and len(got["t"]) == 2 and got["t"][0] < got["t"][1]
    series = got["series"]
    assert series["in_flight"] == [first["in_flight"], second["in_flight"]]
    assert series["pending"] == [first["pending"], second["pending"]]
    assert series["queues"]["work"] == [first["queues"]["work"], second["queues"]["work"]]
    assert series["main"] == [1, 1] and series["tokens"] == [first["tokens"], second["tokens"]]
    assert series["landed_last_hour"] == [first["landed_last_hour"]] * 2
    assert series["gate_seconds"] == [first["gate_seconds"]] * 2 and series["cost_usd"][0] == first["cost_usd"]


def test_a_long_window_is_downsampled_to_the_newest_of_each_bucket(dash, db):
    now = datetime.now(UTC)
    with session_scope(db) as s:
        run = Run(max_tasks=10, max_tokens=10, max_dollars=1.0)
        s.add(run)
        s.flush()
        for i in range(600):  # five hours at one snapshot every 30 s, newest last
            s.add(MetricSnapshot(run_id=run.id, taken_at=now - timedelta(seconds=30 * (599 - i)),
                                 data={"in_flight": i, "main": "red" if i % 2 else "green", "queues": {"work": i}}))
        run_id = run.id
    got = dash.get(f"/api/history?run={run_id}&hours=6&points=50").json()
    assert 40 <= len(got["t"]) <= 50 and got["t"] == sorted(got["t"])
    assert got["series"]["in_flight"][-1] == 599  # the newest snapshot always shows
    assert got["series"]["queues"]["work"][-1] == 599 and set(got["series"]["main"]) <= {0, 1}
    assert got["series"]["tokens"] == [None] * len(got["t"])  # a figure these rows lack is a gap, not 0
    young = dash.get(f"/api/history?run={run_id}").json()  # by default: since the run started (a minute at least)
    assert young["series"]["in_flight"] == [598, 599] and young["to"] - young["from"] == pytest.approx(60, abs=1)
    assert dash.get("/api/history?hours=0").status_code == 400
    assert dash.get("/api/history?points=100000").status_code == 400
    assert dash.get("/api/history?run=nosuchrun").status_code == 404


def test_snapshots_from_before_the_table_still_read(dash, db):
    with session_scope(db) as s:  # what migration 0007 moved over from the old metrics.snapshot events
        run = Run(max_tasks=10, max_tokens=10, max_dollars=1.0)
        s.add(run)
        s.flush()
        s.add(MetricSnapshot(run_id=run.id, data={"tasks": {"running": 2, "assigned": 1, "pending": 4},
                                                  "merged_last_hour": 7, "queues": {"work": 3}, "tokens": 10,
                                                  "cost_usd": 0.5}))
    series = dash.get("/api/history").json()["series"]
    assert series["in_flight"] == [3] and series["pending"] == [4] and series["landed_last_hour"] == [7]
    assert series["main"] == [None] and series["gate_seconds"] == [None]


def test_the_monitor_records_and_prunes(db, redis_client, tmp_path):
    settings = load_settings(sandbox_root=tmp_path / "sb", snapshot_retention_hours=1, snapshot_max_rows=3)
    now = datetime.now(UTC)
    with session_scope(db) as s:
        run, ended = Run(max_tasks=10, max_tokens=10, max_dollars=1.0), Run(max_tasks=1, max_tokens=1, max_dollars=1.0,
                                                                          status="finished")
        s.add_all([run, ended])
        s.flush()
        for minutes in (120, 50, 40, 30, 20):
            s.add(MetricSnapshot(run_id=run.id, taken_at=now - timedelta(minutes=minutes), data={}))
        s.add(MetricSnapshot(run_id=ended.id, taken_at=now - timedelta(minutes=90), data={}))
        run_id, ended_id = run.id, ended.id
    out = monitor_tick(settings)
    assert out["snapshots_pruned"] == 4  # two hours old (both runs), and two over the cap of three
    with session_scope(db) as s:
        kept = s.scalars(select(MetricSnapshot).where(MetricSnapshot.run_id == run_id)
                         .order_by(MetricSnapshot.taken_at)).all()
        assert len(kept) == 3 and kept[-1].data["in_flight"] == 0 and set(FIELDS) <= set(kept[-1].data)
        assert [round((now - k.taken_at).total_seconds() / 60) for k in kept[:2]] == [30, 20]
        assert s.scalar(select(func.count()).select_from(MetricSnapshot).where(MetricSnapshot.run_id == ended_id)) == 0
        assert s.scalar(select(func.count()).select_from(Event).where(Event.kind == "metrics.snapshot")) == 0
        assert prune_snapshots(s, 1, 3) == 0  # nothing left to prune
