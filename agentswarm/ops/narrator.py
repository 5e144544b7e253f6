"""`make swarm`'s story: what a person watching the terminal wants to know, read from Postgres.

The processes' own lines (a plan tick every few seconds, every Celery task) go to their log files;
the console shows their warnings and errors, and these lines under `swarm`:
- one line for each thing that changes the run's course: a culprit sent back, main turning red or
  green again, a revert, a restarted process, a refused request, a run paused, stuck or ended;
- a progress line at most every PROGRESS_S seconds, when something landed or a feature was done:
  features done, landings (and the batches they came in), landings an hour, main's state;
- when the run ends, a box: features, landings, main's verdict and sha, time, cost, where the
  dashboard is, and that Ctrl-C stops the swarm.
Every read is bounded and a failed one is skipped: the story never stops the swarm.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentswarm.db.models import (
    Event,
    Feature,
    FeatureStatus,
    LLMCall,
    MainCheck,
    MergeAttempt,
    MergeStatus,
    Run,
    Task,
)

log = logging.getLogger(__name__)
PROGRESS_S = 10.0
POLL_S = 2.0
EVENTS_PER_POLL = 200
LINE_CAP = 160
LANDINGS = ("gate.batch", "merge.merged")
SAID = {  # kinds worth a line of their own, with how the line starts
    "gate.culprit": "sent back",
    "gate.cannot_run": "gate cannot run",
    "reconcile.revert": "reverting",
    "reconcile.reverted": "reverted",
    "reconcile.revert_failed": "revert failed",
    "reconcile.no_revert": "no revert",
    "reconcile.cannot_run": "main cannot be checked",
    "process.restarted": "restarted",
    "process.gave_up": "gave up",
    "task.rejected": "refused",
    "run.started": "run started",
    "run.paused": "paused",
    "run.resumed": "resumed",
    "run.stuck": "stuck",
    "run.unstuck": "moving again",
    "run.budget": "budget",
    "run.hub_replaced": "hub replaced",
    "run.ended": "run ended",
    "merge.gave_up": "gave up merging",
    "merge.needs_person": "needs a person",
    "hub.needs_person": "needs a person",
    "gate.needs_person": "needs a person",
    "feature.needs_person": "needs a person",
    "flaky.quarantined": "quarantined",
}


@dataclass
class Narrator:
    """Turns the run's new events into console lines; `lines()` is called about once a second."""

    run_id: str
    dashboard_url: str
    session: Any  # a callable returning a context manager over a Session (db.session.session_scope)
    last_event: int = 0
    landed: int = 0
    batches: int = 0
    main_red: bool | None = None
    ended: bool = False
    next_poll: float = 0.0
    last_progress: float = field(default_factory=time.monotonic)
    done_before: int = -1
    landed_before: int = 0

    def lines(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        if now < self.next_poll:
            return []
        self.next_poll = now + POLL_S
        try:
            with self.session() as db:
                out = self._events(db)
                if now - self.last_progress >= PROGRESS_S or (self.ended and self.landed):
                    out += self._progress(db, now)
                if self.ended:
                    out += box(self._final(db), self.dashboard_url)
                    self.next_poll = float("inf")
                return out
        except Exception as exc:  # noqa: BLE001 - the story is best effort; the log says why
            log.warning("narrator: could not read the run: %s", exc)
            return []

    def _events(self, db: Session) -> list[str]:
        rows = db.execute(select(Event.id, Event.kind, Event.message, Event.data).where(
            Event.run_id == self.run_id, Event.id > self.last_event).order_by(Event.id).limit(EVENTS_PER_POLL)).all()
        out = []
        for event_id, kind, message, data in rows:
            self.last_event = event_id
            data = data or {}
            if kind in LANDINGS:  # what landed is counted from the merge records; batches from the gate's
                n = int(data.get("landed", 1)) if kind == "gate.batch" else 1
                self.landed += n
                self.batches += 1 if n and kind == "gate.batch" else 0
            elif kind in ("reconcile.red", "reconcile.green"):
                red = kind == "reconcile.red"
                if red != self.main_red:
                    out.append(_clip(f"main is {'red' if red else 'green'}: {message}"))
                self.main_red = red
            elif kind in SAID:
                out.append(_clip(f"{SAID[kind]}: {message}"))
            if kind == "run.ended":
                self.ended = True
        return out

    def _progress(self, db: Session, now: float) -> list[str]:
        done, total = _features(db)
        if not self.landed and done == max(self.done_before, 0):  # nothing new (nothing yet, at the start)
            return []
        self.last_progress, self.done_before = now, done
        run = db.get(Run, self.run_id)
        landed_total = _landings(db, self.run_id)
        hours = _elapsed_s(run) / 3600
        rate = f"{landed_total / hours:,.0f}/h" if hours > 0.01 else "-"
        batches = f" in {self.batches} batch{'es' if self.batches != 1 else ''}" if self.batches else ""
        new = landed_total - self.landed_before
        line = (f"progress: {done}/{total} features done · {landed_total} landed (+{new}{batches}) · "
                f"{rate} · main {_main(db, self.run_id)}")
        self.landed = self.batches = 0
        self.landed_before = landed_total
        return [_clip(line)]

    def _final(self, db: Session) -> dict[str, Any]:
        run = db.get(Run, self.run_id)
        done, total = _features(db)
        culprits = db.scalar(select(func.count()).where(Event.run_id == self.run_id, Event.kind == "gate.culprit"))
        reverts = db.scalar(select(func.count()).where(Event.run_id == self.run_id,
                                                       Event.kind == "reconcile.reverted"))
        cost = _cost(db, self.run_id)
        landed = _landings(db, self.run_id)
        hours = _elapsed_s(run) / 3600
        return {"run": self.run_id, "why": (run.stop_reason or run.status) if run else "?", "done": done,
                "total": total, "landed": landed, "rate": landed / hours if hours > 0.01 else None,
                "culprits": culprits or 0, "reverts": reverts or 0, "main": _main(db, self.run_id),
                "seconds": _elapsed_s(run), "cost": cost, "demo": bool(run and run.demo)}


def box(f: dict[str, Any], dashboard_url: str) -> list[str]:
    """The end of a run, framed so it stands out among the lines above it."""
    rate = f" ({f['rate']:,.0f}/h)" if f["rate"] else ""
    minutes, seconds = divmod(int(f["seconds"]), 60)
    rows = [f"run {f['run']} ended: {f['why']}",
            f"features   {f['done']}/{f['total']} done",
            f"landings   {f['landed']}{rate}, {f['culprits']} sent back by the gate, {f['reverts']} reverted",
            f"main       {f['main']}",
            f"time       {minutes}m {seconds:02d}s",
            f"cost       ${f['cost']:.4f}" + (" (demo: the simulator charges nothing)" if f["demo"] else ""),
            f"dashboard  {dashboard_url}",
            "Ctrl-C stops every process (the dashboard, Flower and the logs stay until then)"]
    rows = [r if len(r) <= 100 else r[:99] + "…" for r in rows]
    width = max(map(len, rows))
    return ["╭" + "─" * (width + 2) + "╮", *(f"│ {r:<{width}} │" for r in rows), "╰" + "─" * (width + 2) + "╯"]


def _features(db: Session) -> tuple[int, int]:
    counts = dict(db.execute(select(Feature.status, func.count()).group_by(Feature.status)).all())
    return counts.get(FeatureStatus.done, 0), sum(counts.values())


def _landings(db: Session, run_id: str) -> int:
    return db.scalar(select(func.count()).select_from(MergeAttempt).join(Task).where(
        Task.run_id == run_id, MergeAttempt.status == MergeStatus.merged)) or 0


def _main(db: Session, run_id: str) -> str:
    check = db.scalars(select(MainCheck).where(MainCheck.run_id == run_id, MainCheck.finished_at.is_not(None))
                       .order_by(MainCheck.finished_at.desc(), MainCheck.id.desc()).limit(1)).first()
    if check is None:
        return "not checked yet"
    return f"{check.result} at {check.sha[:10]}"


def _cost(db: Session, run_id: str) -> float:
    return float(db.scalar(select(func.coalesce(func.sum(LLMCall.cost_usd), 0.0)).where(LLMCall.run_id == run_id))
                 or 0.0)


def _elapsed_s(run: Run | None) -> float:
    if run is None or run.started_at is None:
        return 0.0
    end = run.ended_at or datetime.now(UTC)
    return max(0.0, (end - run.started_at).total_seconds())


def _clip(text: str, cap: int = LINE_CAP) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= cap else text[:cap - 1] + "…"
