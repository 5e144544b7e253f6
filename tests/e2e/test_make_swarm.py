"""`agentswarm swarm` (what `make swarm` runs), in demo mode, until the features are merged; then Ctrl-C.

The processes run under supervisord: one SIGKILLed (as the OOM killer would) is started again, the restart
is an event, and the monitor's recovery re-sends what it held, so the run still finishes, each task landed once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sqlalchemy import func, select

from agentswarm.db import Event, Feature, MergeAttempt, Run, Task, TaskStatus, session_scope
from agentswarm.ops.supervision import rpc
from agentswarm.ops.swarm import free_port
from tests.e2e.conftest import CHECK, FEATURES
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _left_behind(sid: int, tmp_path: Path) -> list[str]:
    """Processes of the swarm's session, or naming the test's directory (sandboxes live in sessions of their own)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z" and (int(fields[3]) == sid or str(tmp_path) in cmd):
            out.append(f"{pid} {cmd[:200]}")
    return out


class Swarm:
    """The real `agentswarm swarm` in its own session, as a terminal runs it; stopped with Ctrl-C."""

    def __init__(self, tmp_path: Path, **settings: str):
        target = tmp_path / "target"
        (target / "src").mkdir(parents=True)
        (target / "FEATURES.json").write_text(json.dumps({"project": "Tiny", "version": 1, "features": FEATURES}))
        (target / "check.py").write_text(CHECK)
        self.tmp_path, self.log_path = tmp_path, tmp_path / "swarm.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
        self.env.update(HUB_PATH=str(tmp_path / "hub.git"), TARGET_REPO_PATH=str(target),
                        SANDBOX_ROOT=str(tmp_path / "sandboxes"), PLAN_INTERVAL_S="1", MONITOR_INTERVAL_S="2",
                        RECONCILE_INTERVAL_S="3600", RECONCILE_INSTALL="", FLOWER_PORT=str(free_port()),
                        DASHBOARD_PORT=str(free_port()), MAX_WORKERS="3", **settings)
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen([sys.executable, "-m", "agentswarm.ops.cli", "swarm"], cwd=ROOT, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(self.text()[-4000:])

    def conf(self) -> Path:
        """supervisord's config, from the path `agentswarm swarm` prints."""
        def printed():
            self.alive()
            found = re.search(r"supervisorctl -c (\S+supervisord\.conf)", self.text())
            return found and ROOT / found[1]

        return wait_for(printed, timeout=60, every=0.5)

    def pid(self, name: str) -> int:
        """The pid of a process once supervisord has it RUNNING (the celery main process: `exec` keeps it)."""
        conf = self.conf()

        def running():
            self.alive()
            try:  # a fresh proxy each time: one whose request failed cannot send another
                info = rpc(conf).supervisor.getProcessInfo(f"swarm:{name}")
            except OSError:  # supervisord not listening yet
                return 0
            return info["pid"] if info["statename"] == "RUNNING" else 0

        return wait_for(running, timeout=60, every=0.5)

    def stop(self) -> list[str]:
        """Ctrl-C; what was left running (killed then)."""
        os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        finally:
            deadline = time.monotonic() + 20
            while _left_behind(self.proc.pid, self.tmp_path) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = _left_behind(self.proc.pid, self.tmp_path)
            for line in left:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            self.log.close()
            found = re.search(r"supervisorctl -c (\S+)/supervisord\.conf", self.text())
            if found:  # its logs are all in swarm.log too
                shutil.rmtree(ROOT / found[1], ignore_errors=True)
        return left


def _story(swarm: Swarm, db) -> str:
    """What the run did, for a failure's message: features, tasks, merges, the last lines of output."""
    with session_scope(db) as s:
        features = dict(s.execute(select(Feature.id, Feature.status)).all())
        tasks = [(t.id, t.status.value, t.feature_ids, t.attempts) for t in s.scalars(select(Task))]
        merges = [(m.task_id, m.status.value) for m in s.scalars(select(MergeAttempt))]
        events = [(e.kind, e.task_id, e.message[:80]) for e in s.scalars(select(Event).order_by(Event.id))
                  if e.kind != "metrics.snapshot"][-40:]
    return f"features {features}\ntasks {tasks}\nmerges {merges}\nevents {events}\n{swarm.text()[-3000:]}"


def _finishes(swarm: Swarm, db, timeout: float) -> None:
    try:
        wait_for(lambda: _all_done(swarm, db), timeout=timeout, every=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_story(swarm, db)}") from None


def _all_done(swarm: Swarm, db) -> bool:
    swarm.alive()
    with session_scope(db) as s:
        return s.scalar(select(func.count()).where(Feature.status == "done")) == len(FEATURES)


def test_swarm_command_runs_demo_to_merged_and_stops_on_ctrl_c(tmp_path, db, redis_client):
    swarm = Swarm(tmp_path)
    try:
        _finishes(swarm, db, timeout=150)
        with session_scope(db) as s:
            assert s.scalar(select(func.count()).where(MergeAttempt.status == "merged")) >= len(FEATURES)
            assert s.scalars(select(Run.demo)).all() == [True]  # what the user configured: no model
        text = swarm.text()
        assert "demo mode" in text and "run " in text
        with urllib.request.urlopen(f"http://127.0.0.1:{swarm.env['DASHBOARD_PORT']}/api/summary", timeout=10) as r:
            summary = json.loads(r.read())
        assert summary["merges"].get("merged", 0) >= len(FEATURES) and summary["features"]
        state = swarm.conf().parent
        for name in ("beat", "control", "reconcile", "work", "merge", "flower", "llm", "dashboard"):
            assert (state / f"{name}.log").stat().st_size > 0, name  # every line of each process is in its log
        # The console tells the story: no plan ticks, a progress line, and the box once every feature is done.
        # The narrator polls the database on its own clock, so its lines may trail the rows it reads.
        wait_for(lambda: "Ctrl-C stops every process" in swarm.text(), timeout=30, every=0.5)
        text = swarm.text()
        assert "plan_tick" not in text and re.search(r"^\d\d:\d\d:\d\d swarm +\| progress: ", text, re.M), text[-3000:]
        assert re.search(rf"swarm +\| │ features   {len(FEATURES)}/{len(FEATURES)} done", swarm.text()), swarm.text()[-3000:]
    finally:
        left = swarm.stop()
    assert not left, f"processes were left running after Ctrl-C: {left}"
    assert swarm.proc.returncode == 0 and "every process stopped" in swarm.text()


def _merged_per_task(db) -> dict[str, int]:
    with session_scope(db) as s:
        return dict(s.execute(select(MergeAttempt.task_id, func.count()).where(MergeAttempt.status == "merged")
                              .group_by(MergeAttempt.task_id)).all())


def _restarts(db) -> dict[str, list[dict]]:
    with session_scope(db) as s:
        rows = s.scalars(select(Event).where(Event.kind == "process.restarted").order_by(Event.id)).all()
        out: dict[str, list[dict]] = {}
        for e in rows:
            out.setdefault(e.data["process"], []).append({**e.data, "run_id": e.run_id})
        return out


def test_swarm_restarts_sigkilled_workers_and_still_finishes(tmp_path, db, redis_client):
    # The simulated model takes 1.5 s a reply, so the tiny run is still going when its workers are killed (without
    # it the whole run can land before supervisord reports the workers RUNNING).
    swarm = Swarm(tmp_path, HEARTBEAT_INTERVAL_S="1", STALE_HEARTBEAT_S="10", SIM_LATENCY_S="1.5")
    try:
        work_pid, merge_pid = swarm.pid("work"), swarm.pid("merge")

        def running_task():
            swarm.alive()
            with session_scope(db) as s:
                return s.scalar(select(Task.id).where(Task.status == TaskStatus.running).limit(1))

        wait_for(running_task, timeout=90, every=0.2)
        os.kill(work_pid, signal.SIGKILL)  # the OOM killer takes the work worker with an agent running
        with session_scope(db) as s:  # still in flight: the dead worker's (its successor takes seconds to boot)
            held = set(s.scalars(select(Task.id).where(Task.status.in_([TaskStatus.assigned, TaskStatus.running]))))
        assert held

        def merging():  # a finished task on its way to main: the merge worker holds (or is about to take) it
            swarm.alive()
            with session_scope(db) as s:
                return s.scalar(select(func.count()).where(Task.status == TaskStatus.complete,
                                                           Task.id.not_in(select(MergeAttempt.task_id))))

        wait_for(merging, timeout=120, every=0.1)
        os.kill(merge_pid, signal.SIGKILL)

        for name, old in (("work", work_pid), ("merge", merge_pid)):  # started again: a new celery main process
            wait_for(lambda name=name, old=old: swarm.pid(name) != old, timeout=60, every=0.5)
        restarts = wait_for(lambda: (r := _restarts(db)) and {"work", "merge"} <= set(r) and r, timeout=30)
        for name, pid in (("work", work_pid), ("merge", merge_pid)):
            (event,) = restarts[name]
            assert event["signal"] == "SIGKILL" and event["pid"] == pid and event["restarts"] == 1
            assert event["run_id"] is not None and event["handed_back"] is not None  # Redis was asked

        _finishes(swarm, db, timeout=180)
        merged = _merged_per_task(db)
        assert merged and all(n == 1 for n in merged.values()), merged  # no task landed twice
        with session_scope(db) as s:
            tasks = s.scalars(select(Task).where(Task.id.in_(merged))).all()
            landed = {f for t in tasks for f in t.feature_ids}
            recovered = set(s.scalars(select(Event.task_id).where(Event.kind == "task.recovered")))
        assert {f["id"] for f in FEATURES} <= landed
        assert held <= recovered, (held, recovered)  # the monitor gave the dead worker's tasks to another
        assert set(_restarts(db)) == {"work", "merge"}  # nothing else died
    finally:
        left = swarm.stop()
    assert not left, f"processes were left running after Ctrl-C: {left}"
