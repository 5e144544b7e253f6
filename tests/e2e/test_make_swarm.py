"""`agentswarm swarm` (what `make swarm` runs), in demo mode, until the features are merged; then Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from agentswarm.db import Feature, MergeAttempt, session_scope
from agentswarm.ops.swarm import free_port
from tests.e2e.conftest import CHECK, FEATURES
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_swarm_command_runs_demo_to_merged_and_stops_on_ctrl_c(tmp_path, db, redis_client):
    target = tmp_path / "target"
    (target / "src").mkdir(parents=True)
    (target / "FEATURES.json").write_text(json.dumps({"project": "Tiny", "version": 1, "features": FEATURES}))
    (target / "check.py").write_text(CHECK)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    env.update(HUB_PATH=str(tmp_path / "hub.git"), TARGET_REPO_PATH=str(target),
               SANDBOX_ROOT=str(tmp_path / "sandboxes"), PLAN_INTERVAL_S="1", MONITOR_INTERVAL_S="2",
               RECONCILE_INTERVAL_S="3600", RECONCILE_INSTALL="", FLOWER_PORT=str(free_port()), DASHBOARD_PORT=str(free_port()),
               MAX_WORKERS="3")
    log = open(tmp_path / "swarm.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agentswarm.ops.cli", "swarm"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def done() -> bool:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "swarm.log").read_text()[-3000:])
            with session_scope(db) as s:
                return s.scalar(select(func.count()).where(Feature.status == "done")) == len(FEATURES)

        wait_for(done, timeout=150, every=1.0)
        with session_scope(db) as s:
            assert s.scalar(select(func.count()).where(MergeAttempt.status == "merged")) >= len(FEATURES)
        text = (tmp_path / "swarm.log").read_text()
        assert "demo mode" in text and "run " in text
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{env['DASHBOARD_PORT']}/api/summary", timeout=10) as r:
            summary = json.loads(r.read())
        assert summary["merges"].get("merged", 0) >= len(FEATURES) and summary["features"]
        for name in ("beat", "control", "work", "merge", "flower", "llm", "dashboard"):
            assert f" {name}.1 " in text or f"{name}.1 |" in text, name
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        deadline = time.monotonic() + 20
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = _group_alive(proc.pid)
        if alive:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert not alive, "processes were left running after Ctrl-C"
