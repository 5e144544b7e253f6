"""What a person watching the swarm wants to know, as plain data (for the CLI and dashboard)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.agent.contract import MEASURED_FIELDS
from agentswarm.db.models import (
    Event,
    Feature,
    FeatureStatus,
    GateRunRow,
    HandoffRecord,
    LLMCall,
    MainCheck,
    MergeAttempt,
    MergeStatus,
    Run,
    Task,
    TaskStatus,
)
from agentswarm.lifecycle.costs import cost_report, task_cost
from agentswarm.lifecycle.flaky import quarantined_tests
from agentswarm.reconcile.health import health
from agentswarm.reconcile.page import latest_screenshots, screenshots_root

if TYPE_CHECKING:
    from agentswarm.config import Settings


def latest_run(db: Session) -> Run | None:
    """The active run if there is one, else the most recent."""
    active = db.scalars(select(Run).where(Run.status == "active").order_by(Run.started_at.desc())).first()
    return active or db.scalars(select(Run).order_by(Run.started_at.desc())).first()


def superseded_tasks(db: Session, run_id: str) -> int:
    """Failed tasks whose work landed anyway, by another task's hand: every feature they were for is done
    (a conflict task whose branch another resolution landed, a retry that did it). Not failures of the run."""
    done = set(db.scalars(select(Feature.id).where(Feature.status == FeatureStatus.done)))
    failed = db.scalars(select(Task.feature_ids).where(Task.run_id == run_id, Task.status == TaskStatus.failed))
    return sum(1 for ids in failed if ids and set(ids) <= done)


def run_summary(db: Session, run: Run) -> dict:
    """Counts, throughput and spend of one run."""
    tasks: dict[str, int] = {str(k): v for k, v in db.execute(
        select(Task.status, func.count()).where(Task.run_id == run.id).group_by(Task.status)).all()}
    superseded = superseded_tasks(db, run.id)
    if superseded:
        tasks[TaskStatus.failed.value] -= superseded
        tasks = {k: v for k, v in tasks.items() if v} | {"superseded": superseded}
    merges = dict(db.execute(select(MergeAttempt.status, func.count()).join(Task)
                             .where(Task.run_id == run.id).group_by(MergeAttempt.status)).all())
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    merged_hour = db.scalar(select(func.count()).select_from(MergeAttempt).join(Task).where(
        Task.run_id == run.id, MergeAttempt.status == MergeStatus.merged, MergeAttempt.finished_at > hour_ago))
    prompt, completion, cost, calls = db.execute(select(
        func.coalesce(func.sum(LLMCall.prompt_tokens), 0), func.coalesce(func.sum(LLMCall.completion_tokens), 0),
        func.coalesce(func.sum(LLMCall.cost_usd), 0.0), func.count(LLMCall.id),
    ).where(LLMCall.run_id == run.id)).one()
    return {
        "run": run.id, "status": run.status, "stop_reason": run.stop_reason, "demo": run.demo,
        "paused_at": run.paused_at.isoformat() if run.paused_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "tasks": tasks, "merges": merges, "merged_last_hour": merged_hour,
        "llm": {"calls": calls, "prompt_tokens": int(prompt), "completion_tokens": int(completion),
                "cost_usd": round(float(cost), 4)},
        "budget": {"max_tasks": run.max_tasks, "max_tokens": run.max_tokens, "max_dollars": run.max_dollars,
                   "deadline_at": run.deadline_at.isoformat() if run.deadline_at else None},
    }


def feature_progress(db: Session) -> dict[str, dict[str, int]]:
    """Feature counts per category and status."""
    out: dict[str, dict[str, int]] = {}
    for category, status, n in db.execute(select(Feature.category, Feature.status, func.count())
                                          .group_by(Feature.category, Feature.status)).all():
        out.setdefault(category, {})[status] = n
    return dict(sorted(out.items()))


def blocked_state(db: Session, run: Run, shown: int = 10) -> dict:
    """The features that failed for good, what waits on each (agentswarm/planning/blocked.py) and the task a
    person may retry; the run's stuck mark (agentswarm/planning/stuck.py)."""
    rows = db.execute(select(Feature.id, Feature.status, Feature.blocked_by, Feature.status_reason).where(
        (Feature.status == FeatureStatus.blocked)
        | ((Feature.status == FeatureStatus.failed) & Feature.status_reason.is_not(None))).order_by(Feature.id)).all()
    roots: dict[str, dict] = {}
    for fid, st, by, why in rows:
        key = fid if st == FeatureStatus.failed else by or "?"
        root = roots.setdefault(key, {"feature": key, "reason": None, "blocks": [], "retry": None})
        if st == FeatureStatus.failed:
            root["reason"] = why
        else:
            root["blocks"].append(fid)
    for root in list(roots.values())[:shown]:
        root["retry"] = db.scalar(select(Task.id).where(
            Task.run_id == run.id, Task.parent_id.is_(None), Task.feature_ids.contains([root["feature"]]),
            Task.status.in_((TaskStatus.failed, TaskStatus.blocked))).order_by(Task.finished_at.desc().nulls_last()))
    return {"features": list(roots.values())[:shown], "failed_for_good": len(roots),
            "blocked": sum(len(r["blocks"]) for r in roots.values()), "stuck": (run.config or {}).get("stuck") if run.status == "active" else None}


def recent_events(db: Session, run_id: str | None, limit: int = 20) -> list[dict]:
    """The newest events of a run, oldest first."""
    q = select(Event).order_by(Event.id.desc()).limit(limit)
    if run_id:
        q = q.where(Event.run_id == run_id)
    rows = list(db.scalars(q))[::-1]
    return [{"at": e.created_at.strftime("%H:%M:%S"), "kind": e.kind, "task": e.task_id, "message": e.message}
            for e in rows if e.kind != "metrics.snapshot"]


# --- queries for the dashboard (also usable by the CLI) ---

MAX_LIMIT = 500
_TEXT_CAP = 400


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _clip(text: str | None, cap: int = _TEXT_CAP) -> str | None:
    return text if text is None or len(text) <= cap else text[:cap] + "…"


def find_run(db: Session, run_id: str | None) -> Run | None:
    """The run with this id, or the latest run when no id is given."""
    return db.get(Run, run_id) if run_id else latest_run(db)


def run_metrics(db: Session, run: Run, summary: dict | None = None) -> dict:
    """Derived figures: commits landed per hour, merge success rate, and how much of each budget is used."""
    summary = summary or run_summary(db, run)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    landed = db.scalars(select(MergeAttempt.commits_landed).join(Task).where(
        Task.run_id == run.id, MergeAttempt.status == MergeStatus.merged, MergeAttempt.finished_at > hour_ago)).all()
    merges = summary["merges"]
    decided = sum(merges.get(k, 0) for k in ("merged", "conflict", "failed", "rejected"))
    llm = summary["llm"]
    tokens = llm["prompt_tokens"] + llm["completion_tokens"]
    task_total = sum(summary["tasks"].values())
    now = datetime.now(UTC)
    end = run.ended_at or now
    elapsed = (end - run.started_at).total_seconds() if run.started_at else 0.0
    window = run.deadline_at - run.started_at if run.deadline_at and run.started_at else None
    return {
        "commits_last_hour": sum(len(c or []) for c in landed),
        "merge_success_rate": round(merges.get("merged", 0) / decided, 4) if decided else None,
        "elapsed_s": round(elapsed, 1),
        "used": {
            "tokens": tokens, "tokens_frac": _frac(tokens, run.max_tokens),
            "dollars": llm["cost_usd"], "dollars_frac": _frac(llm["cost_usd"], run.max_dollars),
            "tasks": task_total, "tasks_frac": _frac(task_total, run.max_tasks),
            "time_frac": _frac(elapsed, window.total_seconds()) if window else None,
        },
    }


def costs(db: Session, run: Run, settings: Settings) -> dict:
    """What the run cost: per endpoint, per task, per merged commit, wasted, sandboxes (lifecycle/costs.py)."""
    return cost_report(db, run.id, settings)


def cost_lines(c: dict) -> list[str]:
    """The costs as the CLI prints them."""
    per_commit = f"${c['per_merged_commit_usd']:.4f}" if c["per_merged_commit_usd"] is not None else "-"
    per_task = f"${c['per_task_usd']:.4f}" if c["per_task_usd"] is not None else "-"
    waste = c["wasted"]
    lines = [f"cost:   ${c['total_usd']:.4f} (llm ${c['llm_usd']:.4f}, sandboxes ${c['sandbox_usd']:.4f}); "
             f"{per_task} a task, {per_commit} a merged commit ({c['merged_commits']}); wasted ${waste['cost_usd']:.4f}"
             f" ({waste['tokens']} tokens of attempts that never landed)"]
    for e in c["endpoints"]:
        lines.append(f"  {e['endpoint']:<16} {e['calls']} calls ({e['failed']} failed), "
                     f"{e['prompt_tokens'] + e['completion_tokens']} tokens, busy {e['busy_s']:.0f}s, ${e['cost_usd']:.4f}")
    return lines


def _frac(used: float, budget: float | None) -> float | None:
    return round(min(used / budget, 9.99), 4) if budget else None


def task_row(t: Task, now: datetime | None = None) -> dict:
    """One task as the task list shows it."""
    now = now or datetime.now(UTC)
    elapsed = None
    if t.started_at:
        elapsed = round(((t.finished_at or now) - t.started_at).total_seconds(), 1)
    return {
        "id": t.id, "run": t.run_id, "kind": t.kind, "status": t.status, "title": t.title,
        "priority": t.priority, "scope": t.scope, "attempts": t.attempts, "max_attempts": t.max_attempts,
        "sandbox": t.sandbox_id, "parent": t.parent_id, "depth": t.depth, "branch": t.branch,
        "created_at": _iso(t.created_at), "started_at": _iso(t.started_at), "finished_at": _iso(t.finished_at),
        "heartbeat_at": _iso(t.heartbeat_at), "updated_at": _iso(t.updated_at), "elapsed_s": elapsed,
        "summary": _clip(t.summary), "error": _clip(t.error),
    }


def task_list(db: Session, run_id: str | None, statuses: list[str] | None = None, limit: int = 50,
              kinds: list[str] | None = None) -> list[dict]:
    """The most recently changed tasks of a run, optionally only some states and kinds."""
    q = select(Task).order_by(Task.updated_at.desc(), Task.id).limit(max(1, min(limit, MAX_LIMIT)))
    if run_id:
        q = q.where(Task.run_id == run_id)
    if statuses:
        q = q.where(Task.status.in_(statuses))
    if kinds:
        q = q.where(Task.kind.in_(kinds))
    now = datetime.now(UTC)
    return [task_row(t, now) for t in db.scalars(q)]


def handoff_row(h: HandoffRecord) -> dict:
    """One handoff without its transcript (that has its own endpoint)."""
    return {
        "id": h.id, "attempt": h.attempt, "status": h.status, "summary": h.summary, "error": h.error,
        **{name: getattr(h, name) for name in MEASURED_FIELDS}, "prompt_tokens": h.prompt_tokens,
        "completion_tokens": h.completion_tokens, "llm_calls": h.llm_calls, "duration_s": h.duration_s,
        "transcript_bytes": len(h.transcript or ""), "created_at": _iso(h.created_at),
    }


def merge_row(m: MergeAttempt, title: str | None = None) -> dict:
    """One merge attempt as the commit feed shows it (with its gated batch, and why the gate rejected it)."""
    gate = m.gate or {}
    return {
        "id": m.id, "task": m.task_id, "title": title, "branch": m.branch, "strategy": m.strategy,
        "status": m.status, "main_before": m.main_before, "main_after": m.main_after,
        "commits": len(m.commits_landed or []), "conflict_files": m.conflict_files, "error": _clip(m.error),
        "duration_ms": m.duration_ms, "queued_at": _iso(m.queued_at), "finished_at": _iso(m.finished_at),
        "batch": m.batch_id, "position": m.position, "tree": m.tree_sha, "flaky": bool(gate.get("flaky")),
        "why": gate_why(gate) if m.status == MergeStatus.rejected else None,
    }


def task_detail(db: Session, task_id: str) -> dict | None:
    """A task with its description, handoffs and merge attempts; None if there is no such task."""
    t = db.get(Task, task_id)
    if t is None:
        return None
    handoffs = db.scalars(select(HandoffRecord).where(HandoffRecord.task_id == task_id).order_by(HandoffRecord.attempt, HandoffRecord.id))
    merges = db.scalars(select(MergeAttempt).where(MergeAttempt.task_id == task_id).order_by(MergeAttempt.id))
    return {
        **task_row(t), "summary": t.summary, "error": t.error, "description": t.description,
        "acceptance": t.acceptance, "feature_ids": t.feature_ids, "origin": t.origin_id, "base_sha": t.base_sha,
        "handoffs": [handoff_row(h) for h in handoffs], "merges": [merge_row(m, t.title) for m in merges],
        "cost": task_cost(db, task_id),
    }


def latest_transcript(db: Session, task_id: str, attempt: int | None = None) -> HandoffRecord | None:
    """The handoff (latest attempt, or the one asked for) whose transcript the log viewer replays."""
    q = select(HandoffRecord).where(HandoffRecord.task_id == task_id).order_by(HandoffRecord.attempt.desc(), HandoffRecord.id.desc())
    if attempt is not None:
        q = q.where(HandoffRecord.attempt == attempt)
    return db.scalars(q.limit(1)).first()


def merge_feed(db: Session, run_id: str | None, limit: int = 30, statuses: list[str] | None = None) -> list[dict]:
    """The newest merge attempts (landed on main, conflicted or failed), newest first."""
    when = func.coalesce(MergeAttempt.finished_at, MergeAttempt.queued_at)
    q = (select(MergeAttempt, Task.title).join(Task).order_by(when.desc(), MergeAttempt.id.desc())
         .limit(max(1, min(limit, MAX_LIMIT))))
    if run_id:
        q = q.where(Task.run_id == run_id)
    if statuses:
        q = q.where(MergeAttempt.status.in_(statuses))
    return [merge_row(m, title) for m, title in db.execute(q).all()]


def events_after(db: Session, run_id: str | None, after: int | None = None, limit: int = 100) -> dict:
    """Events newer than id `after` (or the newest `limit`), oldest first, and the id to poll after next."""
    limit = max(1, min(limit, MAX_LIMIT))
    q = select(Event)
    if run_id:
        q = q.where((Event.run_id == run_id) | Event.run_id.is_(None))
    if after is None:
        rows = list(db.scalars(q.order_by(Event.id.desc()).limit(limit)))[::-1]
    else:
        rows = list(db.scalars(q.where(Event.id > after).order_by(Event.id).limit(limit)))
    last = rows[-1].id if rows else after
    if last is None:
        last = db.scalar(select(func.max(Event.id))) or 0
    return {
        "last_id": last,
        "events": [{"id": e.id, "at": _iso(e.created_at), "kind": e.kind, "task": e.task_id, "run": e.run_id,
                    "message": _clip(e.message, 1000)} for e in rows if e.kind != "metrics.snapshot"],
    }


# --- the gated merge queue ---

GATE_KINDS = ("gate.batch", "gate.run", "gate.flaky")
_WHY_CAP = 160


def gate_why(gate: dict[str, Any] | None) -> str:
    """Why the gate rejected a branch, in one short line: the clash, else the first failing test, else the output."""
    gate = gate or {}
    clash = gate.get("clashes_with")
    if isinstance(clash, dict) and clash.get("task_id"):
        return _clip(f"clashes with task {clash['task_id']} ({clash.get('branch') or '?'})", _WHY_CAP) or ""
    tests = gate.get("tests") or []
    if tests:
        return _clip(f"test: {tests[0]}", _WHY_CAP) or ""
    output = str(gate.get("output") or "")
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    line = next((ln for ln in lines if not ln.startswith("$ ")), lines[0] if lines else "")
    return _clip(line, _WHY_CAP) or "the gate's checks failed"


def _in_test(db: Session, run_id: str, now: datetime) -> dict | None:
    """The batch the gate is testing now: the newest gate.testing event, unless its batch was decided."""
    ev = db.scalars(select(Event).where(Event.run_id == run_id, Event.kind == "gate.testing")
                    .order_by(Event.id.desc()).limit(1)).first()
    batch_id = (ev.data or {}).get("batch_id") if ev else None
    if ev is None or not batch_id:
        return None
    same_batch = (Event.run_id == run_id) & (Event.data["batch_id"].astext == str(batch_id))
    if db.scalar(select(Event.id).where(same_batch, Event.kind == "gate.batch").limit(1)) is not None:
        return None
    first = db.scalars(select(Event).where(same_batch, Event.kind == "gate.testing")
                       .order_by(Event.id).limit(1)).first() or ev
    return {"batch_id": batch_id, "size": ev.data.get("size"), "stage": ev.data.get("stage"),
            "sha": ev.data.get("sha"), "seconds": round(max(0.0, (now - ev.created_at).total_seconds()), 1),
            "batch_size": first.data.get("size"),
            "batch_seconds": round(max(0.0, (now - first.created_at).total_seconds()), 1)}


def _last_green(db: Session, run_id: str) -> str | None:
    """Main after the newest batch that landed something (else after the newest gated merge)."""
    sha = db.scalar(select(Event.data["main"].astext).where(
        Event.run_id == run_id, Event.kind == "gate.batch", Event.data["landed"].as_integer() > 0)
        .order_by(Event.id.desc()).limit(1))
    return sha or db.scalar(select(MergeAttempt.main_after).join(Task).where(
        Task.run_id == run_id, MergeAttempt.status == MergeStatus.merged, MergeAttempt.batch_id.is_not(None),
        MergeAttempt.main_after.is_not(None)).order_by(MergeAttempt.finished_at.desc().nulls_last(),
                                                       MergeAttempt.id.desc()).limit(1))


def _culprit_row(m: MergeAttempt, title: str | None) -> dict:
    clash = (m.gate or {}).get("clashes_with")
    return {"task": m.task_id, "branch": m.branch, "title": title, "at": _iso(m.finished_at or m.queued_at),
            "batch": m.batch_id, "clashes_with": clash.get("task_id") if isinstance(clash, dict) else None,
            "why": gate_why(m.gate)}


IN_FLIGHT_CAP = 32  # gate runs listed


def gate_runs_state(db: Session, run_id: str, settings: Settings, now: datetime | None = None) -> dict:
    """The gate runs of a run in flight (lane, stage, base, batch, worker, age), the speculation wasted (runs
    cancelled because a batch ahead of them was red), and the gate's capacity: the landings an hour it could
    sustain at its recent run time and batch size with GATE_PARALLEL lanes."""
    now = now or datetime.now(UTC)
    rows = db.scalars(select(GateRunRow).where(GateRunRow.run_id == run_id, GateRunRow.state.in_(("queued", "running")))
                      .order_by(GateRunRow.lane.nulls_last(), GateRunRow.created_at).limit(IN_FLIGHT_CAP)).all()
    in_flight = [{"id": r.id, "lane": r.lane, "stage": r.stage, "state": r.state, "batch": r.batch_id,
                  "sha": r.sha, "base": r.base, "branches": int((r.options or {}).get("branches") or 1),
                  "worker": r.worker, "attempts": r.attempts,
                  "age_s": round(max(0.0, (now - r.created_at).total_seconds()), 1)} for r in rows]
    wasted = db.scalar(select(func.count()).where(GateRunRow.run_id == run_id, GateRunRow.outcome == "cancelled"))
    recent = db.execute(select(GateRunRow.seconds, GateRunRow.spec, GateRunRow.outcome).where(
        GateRunRow.run_id == run_id, GateRunRow.lane.is_not(None), GateRunRow.state == "done",
        GateRunRow.seconds.is_not(None)).order_by(GateRunRow.finished_at.desc()).limit(50)).all()
    capacity = None
    if recent:
        seconds = sorted(float(r.seconds) for r in recent)[len(recent) // 2]
        sizes = [len((r.spec or {}).get("entries") or []) for r in recent if r.outcome == "landed"]
        size = sum(sizes) / len(sizes) if sizes else 0.0
        capacity = round(settings.gate_parallel * size * 3600 / seconds) if seconds > 0 and size else None
    return {"parallel": settings.gate_parallel, "runner": settings.gate_runner.value, "in_flight": in_flight,
            "speculation_wasted": wasted or 0, "capacity_per_hour": capacity}


def gate_state(db: Session, run: Run, settings: Settings, culprits: int = 10) -> dict:
    """The gate of a run: its mode, the batch in test, main's last green commit, counts, the newest culprits."""
    kind, seconds = Event.kind, Event.data["seconds"].as_float()
    batches, red, runs, run_s, flaky = db.execute(select(
        func.count().filter(kind == "gate.batch"),
        func.count().filter(kind == "gate.batch", Event.data["red"].as_boolean().is_(True)),
        func.count().filter(kind == "gate.run"),
        func.coalesce(func.sum(seconds).filter(kind == "gate.run"), 0.0),
        func.count().filter(kind == "gate.flaky"),
    ).where(Event.run_id == run.id, kind.in_(GATE_KINDS))).one()
    landed, rejected = db.execute(select(
        func.count().filter(MergeAttempt.status == MergeStatus.merged, MergeAttempt.batch_id.is_not(None)),
        func.count().filter(MergeAttempt.status == MergeStatus.rejected),
    ).select_from(MergeAttempt).join(Task).where(Task.run_id == run.id)).one()
    caught = db.scalar(select(func.count()).select_from(HandoffRecord).join(Task).where(
        Task.run_id == run.id, HandoffRecord.presubmit.contains([{"ok": False, "unavailable": False}])))
    newest = db.execute(select(MergeAttempt, Task.title).join(Task).where(
        Task.run_id == run.id, MergeAttempt.status == MergeStatus.rejected)
        .order_by(func.coalesce(MergeAttempt.finished_at, MergeAttempt.queued_at).desc(), MergeAttempt.id.desc())
        .limit(max(0, culprits))).all()
    return {
        "mode": settings.gate.value, "presubmit": settings.gate_presubmit,
        "in_test": _in_test(db, run.id, datetime.now(UTC)), "last_green": _last_green(db, run.id),
        "batches": batches, "red_batches": red, "runs": runs, "run_seconds": round(float(run_s), 1),
        "landed": landed, "culprits": rejected, "flaky": flaky, "presubmit_caught": caught or 0,
        "recent_culprits": [_culprit_row(m, title) for m, title in newest],
        **gate_runs_state(db, run.id, settings),
    }


# --- main's health: the reconciler's checks, flaky tests under quarantine, screenshots of green mains ---

MAIN_CHECKS = 5  # the newest checks shown
MAIN_TESTS_CAP = 5  # failing / tolerated test names per check
QUARANTINE_CAP = 20
_TEST_NAME_CAP = 200


def _failed_commands(checks: list[dict[str, Any]] | None) -> list[str]:
    return [str(c.get("command", "")) for c in checks or []
            if c.get("exit_code") not in (0, None) or c.get("timed_out")]


def main_check_row(c: MainCheck, tasks: dict[str, tuple[str, bool]] | None = None) -> dict:
    """One reconciler check: its verdict, why it was red, and what was done (culprit, revert, fix)."""
    tasks = tasks or {}
    failing, tolerated = list(c.failing_tests or []), list(c.quarantined or [])
    failed = _failed_commands(c.checks)
    if c.result == "cannot-run":
        why = next((ln.strip() for ln in (c.output or "").splitlines() if ln.strip()), "")
    else:
        why = ", ".join(failed)
    revert = tasks.get(c.revert_task_id or "")
    reason = (c.bisect or {}).get("reason")
    return {
        "id": c.id, "sha": c.sha, "result": c.result, "at": _iso(c.finished_at), "started_at": _iso(c.started_at),
        "seconds": round(float(c.seconds or 0.0), 1), "why": _clip(why, _WHY_CAP) or None, "failed": failed,
        "action": c.action, "culprit_sha": c.culprit_sha, "culprit_task": c.culprit_task_id,
        "revert_task": c.revert_task_id, "revert_status": revert[0] if revert else None,
        "revert_landed": revert[1] if revert else None,
        "bisect_reason": _clip(str(reason) if reason else None, _WHY_CAP),
        "failing_tests": [_clip(t, _TEST_NAME_CAP) for t in failing[:MAIN_TESTS_CAP]], "failing_count": len(failing),
        "quarantined": [_clip(t, _TEST_NAME_CAP) for t in tolerated[:MAIN_TESTS_CAP]],
        "quarantined_count": len(tolerated),
        "screenshot": c.screenshot,
    }


def _task_states(db: Session, ids: set[str]) -> dict[str, tuple[str, bool]]:
    """Each task's status and whether a merge of it landed."""
    if not ids:
        return {}
    landed = set(db.scalars(select(MergeAttempt.task_id).where(
        MergeAttempt.task_id.in_(ids), MergeAttempt.status.in_((MergeStatus.merged, MergeStatus.reverted)))))
    rows = db.execute(select(Task.id, Task.status).where(Task.id.in_(ids))).all()
    return {tid: (str(st), tid in landed) for tid, st in rows}


def main_state(db: Session, run: Run, settings: Settings, checks: int = MAIN_CHECKS) -> dict:
    """Main's health in a run: the health figures, the newest checks (and the newest red one), the tests
    under quarantine, and the screenshots of green mains kept (names, newest first)."""
    figures = health(db, run.id)
    newest = list(db.scalars(select(MainCheck).where(MainCheck.run_id == run.id)
                             .order_by(MainCheck.started_at.desc(), MainCheck.id.desc()).limit(max(0, checks))))
    last_red = next((c for c in newest if c.result == "red"), None) or db.scalars(
        select(MainCheck).where(MainCheck.run_id == run.id, MainCheck.result == "red")
        .order_by(MainCheck.started_at.desc(), MainCheck.id.desc()).limit(1)).first()
    tasks = _task_states(db, {c.revert_task_id for c in [*newest, last_red] if c and c.revert_task_id})
    quarantined = quarantined_tests(db)
    now = datetime.now(UTC)
    main = figures["main"]
    if main is not None:
        main = {**main, "age_s": round(max(0.0, (now - newest[0].finished_at).total_seconds()), 1)
                if newest else None}
    judged, share = figures["shas_checked"], figures["green_share"]
    shots = latest_screenshots(screenshots_root(settings.hub_path), settings.reconcile_screenshots_keep)
    return {
        "main": main,
        "health": figures,
        "shas_green": round(share * judged) if share is not None else 0,
        "interval_s": settings.reconcile_interval_s,
        "checks": [main_check_row(c, tasks) for c in newest],
        "last_red": main_check_row(last_red, tasks) if last_red else None,
        "flaky": {**figures["flaky"], "release_after": settings.flaky_release_after},
        "quarantined": [{"name": _clip(q.name, _TEST_NAME_CAP), "file": q.file, "observations": q.observations,
                         "passes_in_row": q.passes_in_row, "release_after": settings.flaky_release_after,
                         "quarantined_at": _iso(q.quarantined_at), "fix_task": q.fix_task_id,
                         "last_source": q.last_source} for q in quarantined[:QUARANTINE_CAP]],
        "screenshots": [p.name for p in shots],
    }
