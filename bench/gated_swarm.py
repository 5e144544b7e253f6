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

With `--gate-parallel 1,8` each gated mode runs once per value (GATE_PARALLEL: 1 is the serial gate, N up to
N speculative gate runs in flight), scored as above plus `speculation_wasted` (gate runs cancelled because a
batch below them was red, from the swarm's `gate_runs` table; null where the swarm keeps none);
`--gate-delay S` adds a CPU-free sleep of S seconds to every gate run (GATE_DELAY_S: a slow CI on two cores);
`--flat N` swaps VoxelCraft's features for N independent one-file ones; `--until-done` stops a mode once every
feature is done (time to done and the critical path are reported either way).

`landed_per_hour` is the overall rate, landings over the window the swarm ran: it counts the first gate run's
wait, so it never flatters a slow gate. `landed_per_hour_steady` (first landing to last) counts the first
batch's landings but not the time they took, and overstates the rate when a run holds few batches.

One JSON line per mode (and value of --gate-parallel):

    python bench/gated_swarm.py --workers 16 --seconds 600
    python bench/gated_swarm.py --workers 16 --seconds 600 --modes presubmit-off
    python bench/gated_swarm.py --workers 16 --seconds 600 --modes types-gate --faults test:0.1,flaky:0.02
    python bench/gated_swarm.py --workers 100 --flat 2000 --seconds 1800 --gate-delay 60 --gate-parallel 1,8
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
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentswarm.ops.swarm import free_port  # noqa: E402
from bench.gated_score import Git, finish_line, recheck, score_run  # noqa: E402
from bench.swarm_run import done, flat_target, fresh_db, run_swarm  # noqa: E402

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

LABELS = (("-Q work", "work"), ("-Q merge", "merge"), ("-Q gate", "gate"), ("-Q plan", "control"), (" beat", "beat"),
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


def positive_ints(text: str) -> list[int]:
    """`1,8` as [1, 8]: whole numbers of at least 1, none twice (the values of --gate-parallel)."""
    values: list[int] = []
    for item in text.split(","):
        try:
            value = int(item.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not a whole number") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value} is under 1 (1 is the serial gate)")
        if value in values:
            raise argparse.ArgumentTypeError(f"{value} is given twice")
        values.append(value)
    return values


def seconds_at_least_0(text: str) -> float:
    """A number of seconds, 0 or more (the value of --gate-delay)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more seconds")
    return value


def plan(modes: list[str], parallel: list[int] | None) -> list[tuple[str, int | None]]:
    """(mode, GATE_PARALLEL) in the order they run: a gated mode once per value, a mode without a gate once (None)."""
    if not parallel:
        return [(mode, None) for mode in modes]
    return [(mode, value) for mode in modes
            for value in ([None] if MODES[mode]["GATE"] == "off" else parallel)]


def gate_env(parallel: int | None, delay: float | None) -> dict[str, str]:
    """The swarm's gate settings for one mode: unset ones keep the swarm's defaults."""
    env: dict[str, str] = {}
    if parallel is not None:  # a gate worker per run in flight, two at least (a bisection tests both halves at once)
        env.update(GATE_PARALLEL=str(parallel), GATE_WORKERS=str(2 * parallel))  # lanes, and a bisection aside
    if delay is not None:
        env["GATE_DELAY_S"] = repr(delay)
    return env


def label(mode: str, parallel: int | None) -> str:
    return f"{mode}-p{parallel}" if parallel is not None else mode


def run_mode(mode: str, parallel: int | None, args: argparse.Namespace) -> dict:
    name = label(mode, parallel)
    tmp = Path(tempfile.mkdtemp(prefix=f"agentswarm-gated-{name}-"))
    url = fresh_db(f"agentswarm_bench_{name.replace('-', '_')}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "GATE", "SIM_"))}
    env.update(DATABASE_URL=url, REDIS_URL="redis://127.0.0.1:6379/14", HUB_PATH=str(tmp / "hub.git"),
               SANDBOX_ROOT=str(tmp / "sandboxes"), MAX_WORKERS=str(args.workers), PLAN_INTERVAL_S="2",
               MONITOR_INTERVAL_S="10", RECONCILE_INTERVAL_S=str(args.reconcile_every), FLOWER_PORT=str(free_port()),
               DASHBOARD_PORT=str(free_port()), SIM_FAULTS=args.faults, SIM_LATENCY_S=str(args.latency),
               **MODES[mode], **gate_env(parallel, args.gate_delay))
    if args.flat:  # N features and their retries: the planner's task budget must not end the run first
        env.update(TARGET_REPO_PATH=str(flat_target(tmp / "target", args.flat)), RUN_MAX_TASKS="100000")
    if args.deps:  # reuse an installed dependency cache between modes and runs
        (tmp / "deps").symlink_to(Path(args.deps).resolve())
    subprocess.run(["redis-cli", "-n", "14", "flushdb"], capture_output=True)
    started, started_at, stopped = time.monotonic(), datetime.now().astimezone(), list[float]()

    def all_done() -> bool:
        if done(url):
            stopped.append(time.monotonic())
        return bool(stopped)

    before, after = run_swarm(env, args.seconds, tmp / "swarm.log", probe=cpu_by_process,
                              until=all_done if args.until_done else None)
    cpu = {k: round(v - before.get(k, 0.0), 1) for k, v in sorted(after.items())}
    wall = time.monotonic() - started
    window = min(args.seconds, stopped[0] - started) if stopped else args.seconds
    git = Git(tmp / "hub.git")
    score = score_run(url, git, window)
    shas = score.pop("main_values")
    ordered = [s for s in git.out("rev-list", "--reverse", "main").split() if s in set(shas)] if shas else []
    sample = args.sample_off if mode == "gate-off" else args.sample_on
    out = {"bench": "gated_swarm", "mode": mode, "gate_parallel": parallel,
           "gate_delay_s": args.gate_delay or 0.0, "workload": f"flat-{args.flat}" if args.flat else "voxelcraft",
           "workers": args.workers, "latency_s": args.latency, "seconds": args.seconds, "seconds_run": round(window, 1),
           "faults": args.faults, "cores": os.cpu_count(), **score, **finish_line(url, started_at),
           **recheck(env, ordered, sample or None), "cpu_s": cpu,
           "machine_busy_share": round(cpu["machine_busy"] / cpu["machine_total"], 3) if cpu.get("machine_total") else None,
           "machine_cpu_s_per_landed": round(cpu["machine_busy"] / score["landed"], 2) if score["landed"] else None,
           "swarm_wall_s": round(wall, 1), "dir": str(tmp)}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked; `plan` holds the (mode, GATE_PARALLEL) pairs to run, in order."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long each mode runs (with --until-done: "
                        "at most)")
    parser.add_argument("--workers", type=int, default=16, help="MAX_WORKERS: agent slots")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the simulated model takes per reply")
    parser.add_argument("--flat", type=int, default=0, help="instead of VoxelCraft's features: N without "
                        "dependencies, one new file each")
    parser.add_argument("--faults", default=FAULTS, help="SIM_FAULTS for every mode")
    parser.add_argument("--modes", default=None, help=f"comma-separated, in order, from {', '.join(MODES)} "
                        "(default: gate-on,gate-off; with --gate-parallel: gate-on)")
    parser.add_argument("--gate-parallel", type=positive_ints, default=None, metavar="LIST",
                        help="GATE_PARALLEL values, e.g. 1,8: each gated mode runs once per value")
    parser.add_argument("--gate-delay", type=seconds_at_least_0, default=None, metavar="S",
                        help="GATE_DELAY_S for every mode: a CPU-free sleep added to every gate run")
    parser.add_argument("--until-done", action="store_true", help="stop a mode once every feature is done")
    parser.add_argument("--sample-on", type=int, default=0, help="re-check at most N main shas with the gate on "
                        "(0: every one)")
    parser.add_argument("--sample-off", type=int, default=12, help="re-check N evenly spread main shas with the "
                        "gate off")
    parser.add_argument("--reconcile-every", type=float, default=60.0, help="RECONCILE_INTERVAL_S of the swarm")
    parser.add_argument("--deps", default=None, help="a directory to keep the installed dependencies in")
    args = parser.parse_args(argv)
    if args.flat < 0:
        parser.error("--flat must be 0 (VoxelCraft) or more")
    if args.latency < 0:
        parser.error("--latency must be 0 or more")
    modes = (args.modes or ("gate-on" if args.gate_parallel else "gate-on,gate-off")).split(",")
    for mode in modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    args.plan = plan(modes, args.gate_parallel)
    return args


def main() -> None:
    args = parse_args()
    for mode, parallel in args.plan:
        print(json.dumps(run_mode(mode, parallel, args)), flush=True)


if __name__ == "__main__":
    main()
