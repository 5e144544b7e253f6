"""The history charts in headless Chromium: drawn from the monitor's snapshots of a run, as inline SVG, with no
console error (no CSP violation) and nothing fetched from anywhere but the dashboard."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from agentswarm.db.models import MainCheck, Run, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.monitor.snapshots import record_snapshot

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")]


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--disable-background-networking", "--enable-logging=stderr", "--v=0", "--window-size=1400,1800",
         f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=90)


def _take_a_run_of_snapshots(db, redis_client, run_id: str) -> int:
    """Eight monitor ticks over 40 minutes while tasks start and main goes red, then green again."""
    now = datetime.now(UTC)
    with session_scope(db) as s:
        pending = s.scalars(select(Task.id).where(Task.run_id == run_id, Task.status == TaskStatus.pending)).all()
    for i in range(8):
        with session_scope(db) as s:
            if i < len(pending):
                s.execute(update(Task).where(Task.id == pending[i]).values(status=TaskStatus.running))
            if i == 4:  # main found red for two ticks
                s.add(MainCheck(run_id=run_id, sha="e" * 40, result="red", started_at=now, finished_at=now))
            if i == 6:
                s.add(MainCheck(run_id=run_id, sha="f" * 40, result="green", started_at=now + timedelta(seconds=1),
                                finished_at=now + timedelta(seconds=1)))
            record_snapshot(s, redis_client, s.get(Run, run_id), at=now - timedelta(minutes=5 * (7 - i)))
    return 8


def test_the_charts_render_a_runs_history(start_dashboard, sample, db, redis_client, tmp_path):
    ticks = _take_a_run_of_snapshots(db, redis_client, sample)
    dash = start_dashboard()
    proc = _chromium(tmp_path, "--dump-dom", dash.base + "/")
    dom, log = proc.stdout, proc.stderr
    box = re.search(r'<div id="history" class="charts"[^>]*>', dom)
    assert box and f'data-points="{ticks}"' in box.group(0), log[-2000:]
    assert not [line for line in log.splitlines() if "CONSOLE" in line]  # no errors, no CSP violations
    charts = dict(re.findall(r'<figure class="chart" id="chart-([a-z_]+)" data-points="(\d+)">', dom))
    assert set(charts) == {"landed_last_hour", "in_flight", "queues", "tokens", "cost_usd", "main", "gate_seconds"}
    assert charts["in_flight"] == charts["main"] == str(ticks)
    in_flight = re.search(r'id="chart-in_flight".*?</figure>', dom, re.S).group(0)
    points = re.search(r'<polyline class="line c0" points="([^"]+)"', in_flight).group(1).split()
    assert len(points) == ticks
    ys = [float(p.split(",")[1]) for p in points]
    assert ys == sorted(ys, reverse=True) and ys[0] > ys[-1]  # more tasks in flight at every tick: the line rises
    main = re.search(r'id="chart-main".*?</figure>', dom, re.S).group(0)
    assert re.findall(r'<rect class="(green|red|unknown)"', main) == ["green"] * 4 + ["red"] * 2 + ["green"] * 2
    assert '<span class="value">green</span>' in main
    assert "http://" not in re.search(r'<section class="panel" id="history-panel">.*?</section>', dom, re.S).group(0)
    shot = tmp_path / "history.png"
    _chromium(tmp_path, f"--screenshot={shot}", dash.base + "/")
    assert shot.exists() and shot.stat().st_size > 10_000


def test_no_snapshots_yet(dash, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", dash.base + "/").stdout
    panel = re.search(r'<section class="panel" id="history-panel">.*?</section>', dom, re.S).group(0)
    assert "no run yet" in panel and "<svg" not in panel
