"""Whole-swarm pace: `agentswarm swarm` in demo mode until every feature is done (or a time limit).

Everything is real (supervisord, beat, workers, Redis, Postgres, git hub, local sandboxes, the worker runner and
built-in agent) except the model, which is the built-in simulator over HTTP (`--latency` seconds per reply). It
measures what the harness sustains, not what a real model would. Prints one JSON line:

* time to done (when every feature landed) and landings per hour over the time actually used;
* the critical path of the features' dependency graph: its links, the median link time (a feature's
  ready-to-landed time: ready when its last dependency landed), links x median, and how close the run came;
* samples every `--every` seconds: tasks by state, queue depths, Postgres connections; slot use (the share of
  samples x slots with a task running);
* CPU-seconds of the whole process tree, per landing, and by supervised process: from a cpuacct cgroup when the
  machine lets the bench make one (root, cgroup v1; each supervised process and its descendants moved into a child
  group once supervisord has started them), so sandboxes count however bubblewrap reaps them; else from getrusage
  and /proc (which miss most of a sandbox).

    python bench/demo_swarm.py --workers 16 --latency 2             # VoxelCraft's 200 features
    python bench/demo_swarm.py --workers 100 --flat 300             # 300 features, no dependencies, one file each
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentswarm.ops.swarm import free_port  # noqa: E402
from agentswarm.queue.broker import queue_lengths  # noqa: E402
from bench.cgroup_cpu import CpuGroup  # noqa: E402
from bench.swarm_run import critical_path, done, flat_target, fresh_db, pg, run_swarm  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Every `every` seconds: tasks by state, queue depths, Postgres connections."""

    def __init__(self, url: str, redis_url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.url, self.every, self.samples = url, every, list[dict]()
        self.redis = redis.Redis.from_url(redis_url)
        self.stop = threading.Event()

    def run(self) -> None:
        db = self.url.rsplit("/", 1)[1]
        while not self.stop.wait(self.every):
            try:
                with pg(self.url) as conn:
                    tasks = dict(conn.execute("select status, count(*) from tasks group by status").fetchall())
                    connections = conn.execute("select count(*) from pg_stat_activity where datname = %s",
                                               (db,)).fetchone()[0]
                self.samples.append({"t": time.time(), "tasks": tasks, "queues": queue_lengths(self.redis),
                                     "pg_connections": connections})
            except Exception as exc:  # a sample lost is not the run lost
                self.samples.append({"t": time.time(), "error": str(exc)[:200]})


def process_cpu(state: Path) -> dict[str, float]:
    """CPU-seconds of each supervised process with the children it waited for (read just before the stop)."""
    out: dict[str, float] = {}
    for pidfile in state.glob("*.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        out[pidfile.stem] = round((utime + stime + cutime + cstime) / TICKS, 2)
    return out


def supervised_pids(state: Path, group: CpuGroup | None = None) -> None:
    """Record each supervised process's pid beside its log (supervisorctl pid), for `process_cpu`; with a
    group, move each (and its children) into a child group of its own."""
    conf = state / "supervisord.conf"
    if not conf.exists():
        return
    names = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), "status"],
                           capture_output=True, text=True, timeout=30).stdout.splitlines()
    for line in names:
        parts = line.split()
        if len(parts) >= 4 and parts[1] == "RUNNING" and parts[2] == "pid":
            (state / f"{parts[0]}.pid").write_text(parts[3].rstrip(","))
            if group is not None:
                group.adopt(parts[0], int(parts[3].rstrip(",")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=900.0, help="give up after this long")
    parser.add_argument("--workers", type=int, default=4, help="MAX_WORKERS")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the simulated model takes per reply")
    parser.add_argument("--flat", type=int, default=0, help="instead of VoxelCraft's features: N without dependencies")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between samples")
    parser.add_argument("--label", default="", help="a name for this row (e.g. before/after)")
    parser.add_argument("--stall", type=float, default=300.0,
                        help="stop when nothing has landed for this long (a run stuck on its last features); 0: never")
    parser.add_argument("--db", default="agentswarm_bench", help="the Postgres database (dropped and made anew)")
    parser.add_argument("--redis-db", type=int, default=15, help="the Redis database (flushed)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentswarm-bench-"))
    url = fresh_db(args.db)
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    env.update(DATABASE_URL=url, REDIS_URL=redis_url, HUB_PATH=str(tmp / "hub.git"),
               SANDBOX_ROOT=str(tmp / "sandboxes"), MAX_WORKERS=str(args.workers), PLAN_INTERVAL_S="2",
               MONITOR_INTERVAL_S="10", RECONCILE_INTERVAL_S="100000", SIM_LATENCY_S=str(args.latency),
               RUN_MAX_TASKS="100000", FLOWER_PORT=str(free_port()), DASHBOARD_PORT=str(free_port()))
    if args.flat:
        env["TARGET_REPO_PATH"] = str(flat_target(tmp / "target", args.flat))
    subprocess.run(["redis-cli", "-n", str(args.redis_db), "flushdb"], capture_output=True)
    sampler = Sampler(url, redis_url, args.every)
    state: list[Path] = []
    cpu: dict[str, float] = {}
    group = CpuGroup()  # this process and what it starts: the whole swarm, sandboxes however they are reaped
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_at = datetime.now().astimezone()
    t0_wall = time.time() - 1

    adopt_until = [float("inf")]

    def until() -> bool:
        if not state:
            current = ROOT / "var" / "swarm" / "current"
            if current.exists() and current.resolve().stat().st_mtime >= t0_wall:  # this run's, not an older one
                state.append(current.resolve())
        if state and time.monotonic() < adopt_until[0]:  # processes come up one by one; adopting is idempotent
            supervised_pids(state[0], group)
        if not sampler.is_alive() and state:
            adopt_until[0] = time.monotonic() + 30
            sampler.start()
        finished = done(url, args.stall)
        if finished and state:
            supervised_pids(state[0])
            cpu.update(process_cpu(state[0]))
        return finished

    t0 = time.monotonic()
    run_swarm(env, args.seconds, tmp / "swarm.log", until=until)
    elapsed = time.monotonic() - t0
    if state and not cpu:  # stopped by the time limit: what /proc still shows (the swarm may be gone by now)
        cpu.update(process_cpu(state[0]))
    sampler.stop.set()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with pg(url) as conn:
        merged, first, last = conn.execute("select count(*), min(finished_at), max(finished_at) from merge_attempts "
                                           "where status = 'merged'").fetchone()
        calls = conn.execute("select count(*) from llm_calls").fetchone()[0]
    to_done = (last - started_at).total_seconds() if last else None
    path = critical_path(url, started_at)
    running = [s["tasks"].get("running", 0) + s["tasks"].get("assigned", 0) for s in sampler.samples if "tasks" in s]
    rusage_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    tree_cpu, tree_by_process = group.usage_s(), group.by_child()
    group.release()
    total_cpu = tree_cpu if tree_cpu is not None else rusage_cpu
    out = {
        "bench": "demo_swarm", "label": args.label, "workers": args.workers, "latency_s": args.latency,
        "workload": f"flat-{args.flat}" if args.flat else "voxelcraft", "cores": os.cpu_count(),
        "all_done": path["features_landed"] == path["features"], "seconds_run": round(elapsed, 1),
        "time_to_done_s": round(to_done, 1) if to_done else None, "merged": merged, "llm_calls": calls,
        "landings_per_hour": round(3600 * merged / to_done) if to_done else 0, **path,
        "ratio_to_critical_path": round(to_done / path["critical_path_s"], 2) if to_done and path["critical_path_s"]
        else None,
        "slots_busy": round(statistics.mean(running) / args.workers, 3) if running else None,
        "max_queued_merges": max((s["queues"].get("merge", 0) for s in sampler.samples if "queues" in s), default=0),
        "max_pg_connections": max((s["pg_connections"] for s in sampler.samples if "pg_connections" in s), default=0),
        "cpu_s": round(total_cpu, 1), "cpu_s_per_landing": round(total_cpu / merged, 3) if merged else None,
        "cpu_measured_by": "cgroup" if tree_cpu is not None else "rusage", "cpu_s_rusage": round(rusage_cpu, 1),
        "cpu_s_by_process": tree_by_process if tree_cpu is not None else cpu, "samples": len(sampler.samples),
        "stall_s": args.stall,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
