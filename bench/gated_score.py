"""How bench/gated_swarm.py scores a mode: against the truth in the commits, and by checking `main` again.

The faults come from the `Sim-Fault`/`Sim-Fixed`/`Sim-Pair` trailers the simulator writes into each branch's
commit, never from what the swarm believes; every sha `main` pointed to is checked again afterwards in a clean
sandboxed checkout.
"""

from __future__ import annotations

import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import psycopg

from agentswarm.agent.checks import failing_tests
from agentswarm.config import load_settings
from agentswarm.db.session import session_scope
from agentswarm.demo.sim_faults import FIXED_TRAILER, PAIR_TRAILER, TRAILER
from agentswarm.reconcile.checks import run_checks
from agentswarm.reconcile.health import health
from agentswarm.sandbox.deps import deps_root
from agentswarm.sandbox.factory import check_backend_for
from bench.swarm_run import critical_path, pg

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


def score_run(url: str, git: Git, seconds: float) -> dict:
    """One mode's figures from Postgres and the hub; the overall rate is taken over `seconds`."""
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
        wasted = speculation_wasted(conn, run_id)
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
        "flaky_calls": flaky, "speculation_wasted": wasted,
        "handoff_to_landed_p50_s": _pct(waits, 0.5), "handoff_to_landed_p95_s": _pct(waits, 0.95),
        "main_values": sorted({m for _t, _h, m, _d in merged if m}),
        "health": _health(url, run_id),
    }


def speculation_wasted(conn: psycopg.Connection, run_id: str) -> int | None:
    """Gate runs of this swarm run cancelled because a batch below them was red (stopped, or done for nothing);
    None where there is no `gate_runs`."""
    if conn.execute("select to_regclass('gate_runs')").fetchone()[0] is None:
        return None
    try:
        with conn.transaction():  # a savepoint: a table of another shape leaves the connection usable
            return conn.execute("select count(*) from gate_runs where run_id::text = %s and outcome = 'cancelled'",
                                (run_id,)).fetchone()[0]
    except psycopg.errors.UndefinedColumn:
        return None


def finish_line(url: str, started: datetime) -> dict:
    """The critical path, and the time from the start to the last landing once every feature landed (else None)."""
    path = critical_path(url, started)
    with pg(url) as conn:
        last = conn.execute("select max(finished_at) from merge_attempts where status = 'merged'").fetchone()[0]
    all_done = bool(path["features"]) and path["features_landed"] == path["features"]
    to_done = round((last - started).total_seconds(), 1) if all_done and last else None
    return {"all_done": all_done, "time_to_done_s": to_done, **path}


def _health(url: str, run_id: str) -> dict:
    """The swarm's own record of main's health (what `agentswarm status` shows)."""
    with session_scope(url) as db:
        return health(db, run_id)


def spread(shas: list[str], sample: int | None) -> list[str]:
    """At most `sample` of the shas, evenly spread with the first and the last (one: the last, which holds every
    landing); all of them without a sample."""
    if not sample or len(shas) <= sample:
        return shas
    if sample == 1:
        return shas[-1:]
    step = (len(shas) - 1) / (sample - 1)
    return [shas[round(i * step)] for i in range(sample)]


def recheck(env: dict[str, str], shas: list[str], sample: int | None) -> dict:
    """tsc and the full vitest suite on each sha, in sandboxes, from a clean checkout."""
    shas = spread(shas, sample)
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
