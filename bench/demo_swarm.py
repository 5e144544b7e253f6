"""Whole-swarm throughput: `agentswarm swarm` in demo mode on VoxelCraft for a fixed time.

Everything is real (beat, workers, Redis, Postgres, git hub, local sandboxes, the worker runner
and built-in agent) except the model, which is the built-in simulator over HTTP. It measures
what the harness itself sustains, not what a real model would. Prints one JSON line.

    python bench/demo_swarm.py --seconds 120 --workers 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentswarm.ops.swarm import free_port  # noqa: E402
from bench.swarm_run import fresh_db, run_swarm  # noqa: E402


def _counts(url: str) -> dict:
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        q = conn.execute
        merged, first, last = q("select count(*), min(finished_at), max(finished_at) from merge_attempts "
                                "where status = 'merged'").fetchone()
        tasks = dict(q("select status, count(*) from tasks group by status").fetchall())
        conflicts = q("select count(*) from merge_attempts where status = 'conflict'").fetchone()[0]
        calls, tokens = q("select count(*), coalesce(sum(prompt_tokens + completion_tokens), 0) "
                          "from llm_calls").fetchone()
        p50, p95 = q("select percentile_cont(0.5) within group (order by duration_ms), "
                     "percentile_cont(0.95) within group (order by duration_ms) from merge_attempts").fetchone()
    span = (last - first).total_seconds() if merged > 1 else 0.0
    return {"merged": merged, "conflicts": conflicts, "tasks": tasks, "llm_calls": calls, "tokens": int(tokens),
            "merge_p50_ms": round(p50 or 0, 1), "merge_p95_ms": round(p95 or 0, 1),
            "merges_per_hour_steady": round(3600 * (merged - 1) / span) if span else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to let the swarm run")
    parser.add_argument("--workers", type=int, default=4, help="MAX_WORKERS")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentswarm-bench-"))
    url = fresh_db("agentswarm_bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    env.update(DATABASE_URL=url, REDIS_URL="redis://127.0.0.1:6379/15", HUB_PATH=str(tmp / "hub.git"),
               SANDBOX_ROOT=str(tmp / "sandboxes"), MAX_WORKERS=str(args.workers), PLAN_INTERVAL_S="2",
               MONITOR_INTERVAL_S="10", RECONCILE_INTERVAL_S="100000", FLOWER_PORT=str(free_port()), DASHBOARD_PORT=str(free_port()))
    subprocess.run(["redis-cli", "-n", "15", "flushdb"], capture_output=True)
    run_swarm(env, args.seconds, tmp / "swarm.log")
    out = {"bench": "demo_swarm", "seconds": args.seconds, "workers": args.workers, **_counts(url),
           "cores": os.cpu_count()}
    out["merges_per_hour_overall"] = round(3600 * out["merged"] / args.seconds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
