"""A running attempt's transcript in Postgres: its live pieces (live_steps), and which transcript to show.

The work stage appends pieces while the agent works (agentswarm/work/progress.py); storing the attempt's
handoff deletes them in the same transaction (the handoff holds the whole transcript). An attempt that
never handed off (its worker was killed) keeps its pieces: they are all that is left of what it did.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from agentswarm.db.models import HandoffRecord, LiveStep, Task


def add_live_step(db: Session, task_id: str, attempt: int, *, offset: int, lines: str, events: int,
                  gate_calls: int = 0) -> None:
    """Append one piece (whole JSONL lines, already scrubbed) of the attempt's transcript."""
    db.add(LiveStep(task_id=task_id, attempt=attempt, offset=offset, lines=lines, events=events,
                    gate_calls=gate_calls))


def drop_live_steps(db: Session, task_id: str, attempt: int) -> int:
    """Delete the attempt's pieces (its handoff now holds the transcript); how many there were."""
    result = db.execute(delete(LiveStep).where(LiveStep.task_id == task_id, LiveStep.attempt == attempt))
    return int(getattr(result, "rowcount", 0) or 0)


def live_transcript(db: Session, task_id: str, attempt: int) -> str:
    """The attempt's transcript read so far while it ran: its pieces' lines, in order ("" if none)."""
    q = (select(LiveStep.lines).where(LiveStep.task_id == task_id, LiveStep.attempt == attempt)
         .order_by(LiveStep.id))
    return "".join(db.scalars(q))


def handoff_status(db: Session, task_id: str, attempt: int) -> str | None:
    """The status of the attempt's stored handoff, None when it has none."""
    return db.scalar(select(HandoffRecord.status).where(HandoffRecord.task_id == task_id,
                                                        HandoffRecord.attempt == attempt).limit(1))


def _handoff(db: Session, task_id: str, attempt: int | None) -> HandoffRecord | None:
    q = select(HandoffRecord).where(HandoffRecord.task_id == task_id)
    if attempt is not None:
        q = q.where(HandoffRecord.attempt == attempt)
    return db.scalars(q.order_by(HandoffRecord.attempt.desc(), HandoffRecord.id.desc()).limit(1)).first()


def transcript_of(db: Session, task_id: str, attempt: int | None = None) -> tuple[int | None, str, bool]:
    """(attempt, JSONL transcript, live) of one attempt of a task.

    The stored handoff's transcript when the attempt has one (live False), else its live pieces so far
    (live True, "" when none yet). `attempt` None: the task's latest attempt (Task.attempts) when it has a
    handoff or pieces, else the latest handoff of any attempt, else the latest attempt with no lines yet;
    (None, "", False) when the task never ran (or does not exist).
    """
    if attempt is not None:
        handoff = _handoff(db, task_id, attempt)
        if handoff is not None:
            return attempt, handoff.transcript or "", False
        return attempt, live_transcript(db, task_id, attempt), True
    taken = db.scalar(select(Task.attempts).where(Task.id == task_id)) or 0
    last = _handoff(db, task_id, None)
    if last is not None and last.attempt >= taken:
        return last.attempt, last.transcript or "", False
    if taken > 0 and (live := live_transcript(db, task_id, taken)):
        return taken, live, True
    if last is not None:  # the latest attempt has shown nothing yet: the one before it
        return last.attempt, last.transcript or "", False
    return (taken, "", True) if taken > 0 else (None, "", False)


def parse_step(line: str) -> dict[str, Any]:
    """One transcript line as a dict with a `kind` (a line that is not a JSON object becomes an `unparsed` step)."""
    try:
        item = json.loads(line)
    except ValueError:
        item = None
    if not isinstance(item, dict):
        item = {"kind": "unparsed", "text": line}
    item["kind"] = str(item.get("kind") or "note")[:40]
    return item


def parse_steps(text: str) -> list[dict[str, Any]]:
    """The transcript's non-empty JSONL lines, each parsed by `parse_step`."""
    return [parse_step(line) for line in (text or "").splitlines() if line.strip()]
