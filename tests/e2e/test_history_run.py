"""A real run, watched: the tiny swarm (real workers, sandboxes, the fake LLM) runs to the end while the test plays
beat, so the monitor takes its snapshots as it would; then the history charts render that run in headless
Chromium, /metrics (read with prometheus_client's parser) counts what landed, and the work worker, logging JSON,
named each task and its run on its lines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from agentswarm.config import load_settings
from agentswarm.dashboard import make_server
from agentswarm.db import Feature, Task, session_scope
from agentswarm.db.models import MetricSnapshot
from agentswarm.monitor.tick import monitor_tick
from agentswarm.planning.planner import plan_tick
from agentswarm.reconcile.tick import reconcile_tick
from tests.support.waiting import wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")


def _features_done(db_url) -> bool:
    with session_scope(db_url) as s:
        return s.scalar(select(func.count()).where(Feature.status != "done")) == 0


def test_a_runs_history_metrics_and_logs(swarm, db, celery_worker, tmp_path):
    work = celery_worker(queues="work", pool="threads", concurrency=4, env={**swarm.env, "LOG_FORMAT": "json"})
    celery_worker(queues="merge", pool="solo", env=swarm.env)

    def beat():
        plan_tick()
        monitor_tick()

    wait_for(lambda: _features_done(db), timeout=150, every=1.0, tick=beat)
    assert reconcile_tick()["green"] is True
    monitor_tick()  # the last snapshot: everything landed, main green
    with session_scope(db) as s:
        snapshots = s.scalar(select(func.count()).select_from(MetricSnapshot).where(MetricSnapshot.run_id == swarm.run_id))
        tasks = {t.id: t.run_id for t in s.scalars(select(Task).where(Task.run_id == swarm.run_id))}
    assert snapshots >= 3 and tasks

    server = make_server("127.0.0.1", 0, load_settings(database_url=db))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        history = requests.get(base + "/api/history", timeout=10).json()
        assert history["run"] == swarm.run_id and len(history["t"]) == snapshots  # a young run: every snapshot
        series = history["series"]
        assert series["landed_last_hour"][-1] == len(tasks) and series["main"][-1] == 1
        assert max(series["in_flight"]) >= 1 and series["in_flight"][-1] == 0
        assert series["tokens"] == sorted(series["tokens"]) and series["tokens"][-1] > 0

        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "--virtual-time-budget=5000",
             "--disable-background-networking", "--enable-logging=stderr", "--v=0", "--window-size=1400,1400",
             f"--user-data-dir={tmp_path / 'profile'}", base + "/"], capture_output=True, text=True, timeout=90)
        dom = proc.stdout
        box = re.search(r'<div id="history" class="charts"[^>]*>', dom)
        assert box and f'data-points="{snapshots}"' in box.group(0), proc.stderr[-2000:]
        assert not [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
        landed = re.search(r'id="chart-landed_last_hour".*?</figure>', dom, re.S).group(0)
        assert f'<span class="value">{len(tasks)}</span>' in landed and '<polyline class="line c0"' in landed
        main = re.search(r'id="chart-main".*?</figure>', dom, re.S).group(0)
        assert re.findall(r'<rect class="(\w+)"', main)[-1] == "green"

        families = {f.name: f for f in text_string_to_metric_families(requests.get(base + "/metrics", timeout=10).text)}
        landings = families["agentswarm_landings"].samples
        assert [(s.labels, s.value) for s in landings] == [({"run": swarm.run_id}, float(len(tasks)))]
        tokens = {(s.labels["endpoint"], s.labels["kind"]): s.value for s in families["agentswarm_llm_tokens"].samples}
        assert tokens and all(v > 0 for v in tokens.values())
        done = {s.labels["state"]: s.value for s in families["agentswarm_tasks"].samples}
        assert done["complete"] == len(tasks) and done["running"] == 0
    finally:
        server.shutdown()
        server.server_close()

    lines = [json.loads(ln) for ln in work.log().splitlines() if ln.startswith("{")]
    named = {(r["task_id"], r["run_id"]) for r in lines if r["task_id"]}
    assert {tid for tid, _ in named} == set(tasks) and {rid for _, rid in named} == {swarm.run_id}
    assert all(r["run_id"] == swarm.run_id for r in lines if r["task_id"])
