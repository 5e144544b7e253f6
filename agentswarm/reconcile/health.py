"""Main's health, from what is stored: the reconciler's checks, the queue's records, flaky tests, gate time.

- green share: of the main shas the reconciler checked, how many passed every slow check;
- time to green: from a check that found main red to the next check that found it green
  (p50/p95 over the run's red spells; a spell still open is reported as `red_for_s`);
- reverts: made, landed, failed; culprits by kind (which check they broke: type, test, build,
  page, other), from the gate's rejections and the reconciler's bisections;
- flaky tests: observed, quarantined, released; gate seconds per landed commit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.db.models import (
    Event,
    FlakyStatus,
    FlakyTest,
    MainCheck,
    MergeAttempt,
    MergeStatus,
    Task,
    TaskKind,
)
from agentswarm.reconcile.verdict import GREEN, RED

KINDS = ("type", "test", "build", "page", "other")


def fault_kind(command: str) -> str:
    """Which kind of check a command is, by its words (tsc: type, vitest/test: test, build, page)."""
    c = command.lower()
    if "page check" in c:
        return "page"
    if "tsc" in c:
        return "type"
    if "vitest" in c or "jest" in c or " test" in f" {c}":
        return "test"
    if "build" in c:
        return "build"
    return "other"


def _failed_command(commands: list[dict[str, Any]]) -> str:
    return next((str(c.get("command", "")) for c in commands
                 if c.get("exit_code") not in (0, None) or c.get("timed_out")), "")


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo), 2)


def red_spells(checks: list[MainCheck], now: datetime) -> tuple[list[float], float | None]:
    """Seconds from each first red check to the next green one; and how long main has been red, if it is."""
    spells, red_since = [], None
    for c in checks:
        if c.result == RED and red_since is None:
            red_since = c.finished_at
        elif c.result == GREEN and red_since is not None:
            spells.append(round((c.finished_at - red_since).total_seconds(), 2))
            red_since = None
    return spells, (round((now - red_since).total_seconds(), 2) if red_since is not None else None)


def health(db: Session, run_id: str) -> dict[str, Any]:
    """The run's health figures (see the module doc)."""
    checks = list(db.scalars(select(MainCheck).where(MainCheck.run_id == run_id).order_by(MainCheck.started_at,
                                                                                         MainCheck.id)))
    judged = {c.sha: c.result for c in checks if c.result in (GREEN, RED)}  # a sha's latest verdict
    spells, red_for = red_spells(checks, datetime.now(UTC))
    reverts = db.execute(select(
        func.count(Task.id), func.count(Task.id).filter(Task.id.in_(
            select(MergeAttempt.task_id).where(MergeAttempt.status == MergeStatus.merged))),
        func.count(Task.id).filter(Task.status == "failed")).where(
        Task.run_id == run_id, Task.kind == TaskKind.revert)).one()
    culprits = dict.fromkeys(KINDS, 0)
    rejected = db.scalars(select(MergeAttempt.gate).join(Task, Task.id == MergeAttempt.task_id).where(
        Task.run_id == run_id, MergeAttempt.status == MergeStatus.rejected))
    for gate in rejected:
        culprits[fault_kind(_failed_command((gate or {}).get("commands") or []))] += 1
    blamed: set[str] = set()  # a culprit found again by a later check (its revert on its way) counts once
    for c in checks:
        found = [x.get("culprit") for x in (c.bisect or {}).get("culprits") or []] or [c.culprit_task_id]
        for task_id in filter(None, found):
            if task_id not in blamed:
                blamed.add(task_id)
                culprits[fault_kind(_failed_command(c.checks or []))] += 1
    flaky = dict(db.execute(select(FlakyTest.status, func.count()).group_by(FlakyTest.status)).all())
    landed = int(db.scalar(select(func.count(MergeAttempt.id)).join(Task, Task.id == MergeAttempt.task_id).where(
        Task.run_id == run_id, MergeAttempt.status.in_((MergeStatus.merged, MergeStatus.reverted)))) or 0)
    gate_s = float(db.scalar(select(func.coalesce(func.sum(Event.data["seconds"].as_float()), 0.0)).where(
        Event.run_id == run_id, Event.kind == "gate.batch")) or 0.0)
    last = checks[-1] if checks else None
    return {
        "checks": len(checks),
        "shas_checked": len(judged),
        "green_share": round(sum(1 for r in judged.values() if r == GREEN) / len(judged), 3) if judged else None,
        "main": {"sha": last.sha, "result": last.result, "at": last.finished_at.isoformat()} if last else None,
        "time_to_green_s": {"spells": len(spells), "p50": percentile(spells, 50), "p95": percentile(spells, 95),
                            "max": max(spells) if spells else None},
        "red_for_s": red_for,
        "reverts": {"made": int(reverts[0]), "landed": int(reverts[1]), "failed": int(reverts[2])},
        "culprits_by_kind": {k: v for k, v in culprits.items() if v},
        "flaky": {s.value: int(flaky.get(s, 0)) for s in FlakyStatus},
        "gate_seconds_per_landed": round(gate_s / landed, 2) if landed else None,
    }
