"""Does main stay green at swarm speed? The demo swarm on VoxelCraft with injected faults, gate on and off.

Each mode runs `agentswarm swarm` in demo mode (everything real but the model: beat, workers,
Redis, Postgres, the hub, bubblewrap sandboxes, presubmit and the gate running tsc and vitest)
for T seconds with SIM_FAULTS, then scores it from Postgres and git:

- landed, landed per hour (overall, and steady from the first landing to the last);
- faults injected, caught by presubmit (fixed within the attempt, or sent back) and by the queue
  (rejected), and missed (landed), each from the `Sim-Fault`/`Sim-Fixed` trailers the simulator
  writes into the branch's commit: the truth, never what the swarm believes;
- culprits the queue blamed against those trailers (true, false), red batches, bisection runs,
  gate runs and gate seconds per landed commit, flaky calls;
- p50/p95 seconds from a task's complete handoff to its landing;
- main's health as the swarm recorded it (`reconcile.health`: shas the reconciler checked and the
  share green, time from a red main to green p50/p95, reverts made and landed, culprits by kind,
  flaky tests observed and quarantined), with the reconciler ticking every --reconcile-every seconds;
- every sha main pointed to (gate off: an even sample) checked again after the run in a clean
  sandboxed checkout with `tsc --noEmit` and the full vitest suite: red count. A sha that fails
  is run again: green the second time counts as `red_then_green`; failing again only in the
  simulator's deliberately flaky tests (which the gate, by design, does not block) counts as
  `red_only_flaky_tests`; anything else is `red`.

One JSON line per mode:

    python bench/gated_swarm.py --workers 16 --seconds 600
    python bench/gated_swarm.py --workers 16 --seconds 600 --modes presubmit-off
    python bench/gated_swarm.py --workers 16 --seconds 600 --modes types-gate --faults test:0.1,flaky:0.02
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentswarm.agent.checks import failing_tests  # noqa: E402
from agentswarm.config import load_settings  # noqa: E402
from agentswarm.db.session import session_scope  # noqa: E402
from agentswarm.demo.sim_faults import FIXED_TRAILER, PAIR_TRAILER, TRAILER  # noqa: E402
from agentswarm.ops.swarm import free_port  # noqa: E402
from agentswarm.reconcile.checks import run_checks  # noqa: E402
from agentswarm.reconcile.health import health  # noqa: E402
from agentswarm.sandbox.deps import deps_root  # noqa: E402
from agentswarm.sandbox.factory import check_backend_for  # noqa: E402
from bench.swarm_run import fresh_db, run_swarm  # noqa: E402

FAULTS = "type:0.08,test:0.04,semantic:0.03,flaky:0.02,shared:0.05"
TSC = "node_modules/.bin/tsc --noEmit"
MODES = {
    "gate-on": {"GATE": "batch", "GATE_PRESUBMIT": "on"},
    "gate-off": {"GATE": "off", "GATE_PRESUBMIT": "off"},
    "presubmit-off": {"GATE": "batch", "GATE_PRESUBMIT": "off"},
    # A quick gate that checks types only (presubmit too): failing tests reach main, and the reconciler's
    # slow checks (the whole suite, the build, the page) must find them, revert them and reopen their tasks.
    "types-gate": {"GATE": "batch", "GATE_PRESUBMIT": "on", "GATE_COMMANDS": json.dumps([TSC]),
                   "GATE_FULL_COMMANDS": json.dumps([TSC]),
                   "GATE_PRESUBMIT_COMMANDS": json.dumps([f"{TSC} -p {{tsconfig}}"])},
}
BREAKS = ("type", "test", "semantic")  # the faults the gate must catch (flaky may pass; shared is textual)
RECHECK = ["node_modules/.bin/tsc --noEmit", "node_modules/.bin/vitest run --pool=vmThreads"]
SIM_FLAKY = "flaky: "  # the name of every test the simulator makes flaky on purpose
_TRAILER = re.compile(rf"^({TRAILER}|{FIXED_TRAILER}|{PAIR_TRAILER}):\s*(\w+)\s*$", re.M)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


class Git:
    def __init__(self, hub: Path) -> None:
        self.hub = hub
        self._trailers: dict[str, dict[str, str]] = {}

    def out(self, *args: str) -> str:
        return subprocess.run(["git", f"--git-dir={self.hub}", *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    def trailers(self, sha: str | None) -> dict[str, str]:
        """{"Sim-Fault": kind} and/or {"Sim-Fixed": kind} from the message of a head commit (the runner makes one per attempt)."""
        if not sha:
            return {}
        if sha not in self._trailers:
            found: dict[str, str] = {}
            for key, kind in _TRAILER.findall(self.out("log", "-1", "--format=%B", sha)):
                found.setdefault(key, kind)
            self._trailers[sha] = found
        return self._trailers[sha]


LABELS = (("-Q work", "work"), ("-Q merge", "merge"), ("-Q plan", "control"), (" beat", "beat"),
          ("fake-llm", "llm"), ("flower", "flower"), ("dashboard", "dashboard"), ("postgres", "postgres"),
          ("redis-server", "redis"))


def cpu_by_process() -> dict[str, float]:
    """CPU seconds so far: the orchestrator's own processes by role (not their sandboxes), Postgres, Redis,
    and the whole machine (busy and total); the sandboxes' share is what the machine spent beyond the rest."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        label = next((name for key, name in LABELS if key in cmd), None)
        if label is None or cmd.startswith(("/bin/sh -c", "sh -c")):  # the Procfile runner's shell wrappers
            continue
        if label not in ("postgres", "redis") and not re.search(r"celery|bin/agentswarm|agentswarm\.ops", cmd):
            continue  # a sandboxed command whose arguments merely contain a role's word
        out[label] = out.get(label, 0.0) + sum(int(x) for x in fields[11:13]) / tick
    with open("/proc/stat") as fh:  # the whole machine: user nice system idle iowait irq softirq steal
        ticks = [int(x) for x in fh.readline().split()[1:9]]
    out["machine_busy"] = (sum(ticks) - ticks[3] - ticks[4]) / tick
    out["machine_total"] = sum(ticks) / tick
    return out


def _score(url: str, git: Git, seconds: float) -> dict:
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        q = conn.execute
        merged = q("select task_id, head_sha, main_after, finished_at from merge_attempts where status = 'merged' "
                   "order by finished_at").fetchall()
        rejected = q("select task_id, head_sha, gate from merge_attempts where status = 'rejected'").fetchall()
        handoffs = q("select task_id, attempt, status, head_sha, presubmit, created_at from handoffs").fetchall()
        batches = [r[0] for r in q("select data from events where kind = 'gate.batch'").fetchall()]
        runs = [r[0] for r in q("select data from events where kind = 'gate.run'").fetchall()]
        flaky = q("select count(*) from events where kind = 'gate.flaky'").fetchone()[0]
        run_id = q("select id from runs order by started_at desc limit 1").fetchone()[0]
        conflicts = q("select count(*) from merge_attempts where status = 'conflict'").fetchone()[0]
        tasks = dict(q("select status, count(*) from tasks group by status").fetchall())
    landed = {t for t, *_ in merged}
    first, last = (merged[0][3], merged[-1][3]) if merged else (None, None)
    span = (last - first).total_seconds() if merged and len(merged) > 1 else 0.0

    injected = {k: 0 for k in BREAKS + ("flaky", "shared")}
    by_presubmit = {k: 0 for k in BREAKS + ("flaky", "shared")}
    presubmit_failed = 0
    for _task, _attempt, _status, head, presubmit, _at in handoffs:
        tr = git.trailers(head)
        kind = tr.get(FIXED_TRAILER) or tr.get(TRAILER)
        if kind in injected:
            injected[kind] += 1
        failed = any(not r.get("ok") and not r.get("unavailable") for r in presubmit or [])
        presubmit_failed += failed
        if failed and kind in by_presubmit:
            by_presubmit[kind] += 1
    by_queue = {k: 0 for k in BREAKS + ("flaky", "shared")}
    culprits = {"true": 0, "false": 0, "flaky_test": 0}
    for _task, head, _gate in rejected:
        kind = git.trailers(head).get(TRAILER)
        if kind in BREAKS:
            culprits["true"] += 1
            by_queue[kind] += 1
        elif kind == "flaky":
            culprits["flaky_test"] += 1
            by_queue["flaky"] += 1
        else:
            culprits["false"] += 1
    landed_with = {k: 0 for k in BREAKS + ("flaky", "shared")}
    pairs: dict[str, int] = {}
    for _task, head, *_ in merged:
        tr = git.trailers(head)
        kind = tr.get(TRAILER)
        if kind in landed_with:
            landed_with[kind] += 1
        if kind == "semantic":
            pairs[tr.get(PAIR_TRAILER, head)] = pairs.get(tr.get(PAIR_TRAILER, head), 0) + 1
    # A semantic fault is one half of a pair (branches started from the same main): the first of a pair
    # to land breaks nothing; every later one of the same pair would.
    missed = {k: landed_with[k] for k in ("type", "test")}
    missed["semantic"] = sum(n - 1 for n in pairs.values())
    caught = sum(by_presubmit[k] + by_queue[k] for k in BREAKS)
    recall = round(caught / (caught + sum(missed.values())), 4) if caught + sum(missed.values()) else None

    complete_at = {}
    for task, _attempt, status, head, _pre, created in handoffs:
        if status == "complete" and head:
            complete_at[(task, head)] = created
    waits = [(done - complete_at[(t, h)]).total_seconds() for t, h, _m, done in merged if (t, h) in complete_at]
    red_batches = [b for b in batches if b.get("red")]
    gate_seconds = sum(float(r.get("seconds") or 0) for r in runs)
    return {
        "landed": len(landed), "landed_per_hour": round(3600 * len(landed) / seconds),
        "landed_per_hour_steady": round(3600 * (len(merged) - 1) / span) if span else 0,
        "tasks": tasks, "conflicts": conflicts,
        "faults_injected": injected, "caught_by_presubmit": by_presubmit, "presubmit_failures": presubmit_failed,
        "caught_by_queue": by_queue, "landed_with_fault": landed_with, "missed": missed, "recall": recall,
        "culprits": culprits,
        "false_culprit_share": round(culprits["false"] / max(1, sum(culprits.values())), 4),
        "batches": len(batches), "red_batches": len(red_batches),
        "bisection_runs": sum(max(0, int(b.get("runs") or 0) - 1) for b in red_batches),
        "gate_runs": len(runs), "gate_seconds": round(gate_seconds, 1),
        "gate_seconds_per_landed": round(gate_seconds / len(landed), 2) if landed else None,
        "flaky_calls": flaky,
        "handoff_to_landed_p50_s": _pct(waits, 0.5), "handoff_to_landed_p95_s": _pct(waits, 0.95),
        "main_values": sorted({m for _t, _h, m, _d in merged if m}),
        "health": _health(url, run_id),
    }


def _health(url: str, run_id: str) -> dict:
    """The swarm's own record of main's health (what `agentswarm status` shows)."""
    with session_scope(url) as db:
        return health(db, run_id)


def _recheck(env: dict[str, str], shas: list[str], sample: int | None) -> dict:
    """tsc and the full vitest suite on each sha, in sandboxes, from a clean checkout."""
    if sample and len(shas) > sample:
        step = (len(shas) - 1) / (sample - 1)
        shas = [shas[round(i * step)] for i in range(sample)]
    settings = load_settings(**{k.lower(): v for k, v in env.items() if k in ("HUB_PATH", "SANDBOX_ROOT")})
    backend, hub = check_backend_for(settings), str(settings.hub_path.resolve())
    red, flaky_red, flaky_only, seconds, failures = 0, 0, 0, 0.0, []
    for sha in shas:
        t0 = time.monotonic()
        results = run_checks(backend, hub, sha, settings.gate_install, RECHECK, 900, deps_root(settings.hub_path))
        if not all(r.ok for r in results):
            again = run_checks(backend, hub, sha, settings.gate_install, RECHECK, 900, deps_root(settings.hub_path))
            bad = next((r for r in again if not r.ok), None)
            tests = failing_tests(bad.output) if bad else []
            if bad is None:
                flaky_red += 1
            elif bad.command == RECHECK[-1] and tests and all(SIM_FLAKY in t for t in tests):
                flaky_only += 1  # only the simulator's deliberately flaky tests failed, twice
            else:
                red += 1
                failures.append({"sha": sha[:12], "command": bad.command, "tail": bad.output[-400:]})
        seconds += time.monotonic() - t0
    return {"rechecked": len(shas), "red": red, "red_then_green": flaky_red, "red_only_flaky_tests": flaky_only,
            "recheck_s": round(seconds, 1), "red_examples": failures[:3]}


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"agentswarm-gated-{mode}-"))
    url = fresh_db(f"agentswarm_bench_{mode.replace('-', '_')}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "GATE", "SIM_"))}
    env.update(DATABASE_URL=url, REDIS_URL="redis://127.0.0.1:6379/14", HUB_PATH=str(tmp / "hub.git"),
               SANDBOX_ROOT=str(tmp / "sandboxes"), MAX_WORKERS=str(args.workers), PLAN_INTERVAL_S="2",
               MONITOR_INTERVAL_S="10", RECONCILE_INTERVAL_S=str(args.reconcile_every), FLOWER_PORT=str(free_port()),
               DASHBOARD_PORT=str(free_port()), SIM_FAULTS=args.faults, **MODES[mode])
    if args.deps:  # reuse an installed dependency cache between modes and runs
        (tmp / "deps").symlink_to(Path(args.deps).resolve())
    subprocess.run(["redis-cli", "-n", "14", "flushdb"], capture_output=True)
    started = time.monotonic()
    before, after = run_swarm(env, args.seconds, tmp / "swarm.log", probe=cpu_by_process)
    cpu = {k: round(v - before.get(k, 0.0), 1) for k, v in sorted(after.items())}
    wall = time.monotonic() - started
    git = Git(tmp / "hub.git")
    score = _score(url, git, args.seconds)
    shas = score.pop("main_values")
    ordered = [s for s in git.out("rev-list", "--reverse", "main").split() if s in set(shas)] if shas else []
    sample = args.sample_off if mode == "gate-off" else args.sample_on
    out = {"bench": "gated_swarm", "mode": mode, "workers": args.workers, "seconds": args.seconds,
           "faults": args.faults, "cores": os.cpu_count(), **score,
           **_recheck(env, ordered, sample or None), "cpu_s": cpu,
           "machine_busy_share": round(cpu["machine_busy"] / cpu["machine_total"], 3) if cpu.get("machine_total") else None,
           "machine_cpu_s_per_landed": round(cpu["machine_busy"] / score["landed"], 2) if score["landed"] else None,
           "swarm_wall_s": round(wall, 1), "dir": str(tmp)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--faults", default=FAULTS, help="SIM_FAULTS for every mode")
    parser.add_argument("--modes", default="gate-on,gate-off",
                        help=f"comma-separated, in order, from {', '.join(MODES)}")
    parser.add_argument("--sample-on", type=int, default=0, help="re-check at most N main shas with the gate on "
                        "(0: every one)")
    parser.add_argument("--sample-off", type=int, default=12, help="re-check N evenly spread main shas with the "
                        "gate off")
    parser.add_argument("--reconcile-every", type=float, default=60.0, help="RECONCILE_INTERVAL_S of the swarm")
    parser.add_argument("--deps", default=None, help="a directory to keep the installed dependencies in")
    args = parser.parse_args()
    for mode in args.modes.split(","):
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    for mode in args.modes.split(","):
        print(json.dumps(run_mode(mode, args)), flush=True)


if __name__ == "__main__":
    main()
