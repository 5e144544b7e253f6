"""Tasks as a person looks them up: ids abbreviated as git does, one task in full, its transcript as readable steps
(shared by the `tasks`, `show` and `logs` verbs)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.control.status import gate_why, task_detail
from agentswarm.control.steering import NotFound
from agentswarm.db.models import Event, MergeAttempt, Task
from agentswarm.db.session import session_scope
from agentswarm.db.states import IN_FLIGHT, TERMINAL
from agentswarm.lifecycle.progress import parse_step, parse_steps, transcript_of
from agentswarm.planning.parsing import InvalidTask

_REF_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
SHOWN_MATCHES = 5


def find_task(db: Session, ref: str) -> Task:
    """The task an id or a unique prefix of one names (as git takes an abbreviated sha); one clear error if none
    or several."""
    ref = (ref or "").strip()
    if not _REF_RE.match(ref):
        raise InvalidTask(f"{ref[:40]!r} is not a task id (letters, digits, - and _)")
    exact = db.get(Task, ref)
    if exact is not None:
        return exact
    pattern = ref.replace("\\", "\\\\").replace("_", "\\_") + "%"
    ids = list(db.scalars(select(Task.id).where(Task.id.like(pattern, escape="\\")).order_by(Task.id)
                          .limit(SHOWN_MATCHES + 1)))
    if not ids:
        raise NotFound(f"no task {ref}")
    if len(ids) > 1:
        more = "…" if len(ids) > SHOWN_MATCHES else ""
        raise InvalidTask(f"{ref} is ambiguous: it begins {', '.join(ids[:SHOWN_MATCHES])}{more}; give more characters")
    task = db.get(Task, ids[0])
    assert task is not None
    return task


def task_events(db: Session, task_id: str, limit: int = 20) -> list[dict]:
    """The task's newest events, oldest first."""
    rows = list(db.scalars(select(Event).where(Event.task_id == task_id).order_by(Event.id.desc()).limit(limit)))
    return [{"at": _iso(e.created_at), "kind": e.kind, "message": e.message} for e in reversed(rows)]


def show_task(db: Session, task: Task, events: int = 20, last_steps: int = 5) -> dict:
    """Everything about one task: the row, its attempts' handoffs, its merge attempts with the gate's results,
    its events, and a summary of its latest transcript (live while an attempt runs)."""
    detail = task_detail(db, task.id) or {}
    attempt, text, live = transcript_of(db, task.id)
    steps = parse_steps(text)
    kinds: dict[str, int] = {}
    for s in steps:
        kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
    merges = detail.get("merges", [])
    gates = _gate_results(db, task.id)
    for m in merges:
        m["gate"] = gates.get(m["id"])
    return {**detail, "request_key": task.request_key, "context": task.context,
            "events": task_events(db, task.id, events),
            "transcript": {"attempt": attempt, "live": live, "steps": len(steps), "kinds": kinds,
                           "last": [render_step(s) for s in steps[-last_steps:]]}}


def _gate_results(db: Session, task_id: str) -> dict[int, dict]:
    """Per merge attempt the gate tested: its verdict, each command's exit, the failing tests, and why."""
    out: dict[int, dict] = {}
    for m in db.scalars(select(MergeAttempt).where(MergeAttempt.task_id == task_id)):
        gate = m.gate or {}
        if not gate.get("result"):
            continue
        commands = [{"command": str(c.get("command", ""))[:200], "exit": c.get("exit_code"),
                     "seconds": c.get("duration_s"), "timed_out": bool(c.get("timed_out"))}
                    for c in gate.get("commands") or [] if isinstance(c, dict)]
        out[m.id] = {"result": gate.get("result"), "commands": commands, "tests": list(gate.get("tests") or [])[:10],
                     "seconds": gate.get("seconds"), "flaky": bool(gate.get("flaky")),
                     "why": gate_why(gate) if gate.get("result") != "green" else None}
    return out


def render_step(step: dict[str, Any], width: int = 160) -> str:
    """One transcript step as one line: time, kind, and what happened."""
    t = step.get("t")
    at = datetime.fromtimestamp(t).strftime("%H:%M:%S") if isinstance(t, int | float) else "--:--:--"
    kind = step["kind"]
    if kind == "assistant":
        calls = step.get("tool_calls") or []
        names = ", ".join(f"{c.get('name')}({_short(c.get('arguments'), 60)})" for c in calls if isinstance(c, dict))
        what = _short(step.get("content"), width) if step.get("content") else ""
        what = f"{what} -> {names}" if names and what else names or what or "(no content)"
        what += f"  [{step.get('prompt_tokens', 0)}+{step.get('completion_tokens', 0)} tokens]"
    elif kind == "tool":
        what = f"{step.get('name', '?')}: {_short(step.get('result'), width)}"
    elif kind == "note":
        rest = {k: v for k, v in step.items() if k not in ("t", "kind", "event")}
        what = f"{step.get('event', '')} {_short(json.dumps(rest, ensure_ascii=False, default=str), width)}"
    elif kind == "llm_call":
        what = (f"llm call {'ok' if step.get('ok', True) else 'failed'} {step.get('prompt_tokens', 0)}+"
                f"{step.get('completion_tokens', 0)} tokens, {step.get('latency_ms', 0)} ms")
    elif kind in ("user", "system"):
        what = _short(step.get("content"), width)
    elif kind == "outcome":
        what = f"{step.get('status')}" + (f": {_short(step.get('error'), width)}" if step.get("error") else "")
    else:
        rest = {k: v for k, v in step.items() if k not in ("t", "kind")}
        what = _short(json.dumps(rest, ensure_ascii=False, default=str), width)
    return f"{at} {kind:<10} {what}".rstrip()


def _short(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def follow_transcript(ref: str, *, attempt: int | None = None, follow: bool = False, raw: bool = False,
                      interval_s: float = 1.0, idle_limit_s: float | None = None) -> Iterator[str]:
    """The lines of `agentswarm logs`: an attempt's steps, and with `follow` the new ones as they reach Postgres,
    through the attempt's end and into the task's next attempt, until the task ends (or `idle_limit_s` passes
    with nothing new).

    A running attempt's steps come from its live pieces; once it hands off, from its handoff's transcript, whose
    first lines are the same steps: printing goes on from the count already printed. The handoff is stored in the
    same transaction that ends the task, so a task seen ended has its whole transcript in the same read.
    """
    current: int | None = None
    printed = 0
    idle_since = time.monotonic()
    said_waiting = False
    while True:
        with session_scope() as db:
            task = find_task(db, ref)
            task_id, status, latest = task.id, task.status, task.attempts
            got, text, _live = transcript_of(db, task_id, attempt)
        if got is None:
            if not said_waiting:
                yield f"task {task_id} is {status}: no attempt has started yet" + ("; waiting" if follow else "")
                said_waiting = True
        elif got != current:
            if current is not None:
                yield f"--- attempt {got} ---"
            current, printed = got, 0
        lines = [ln for ln in (text or "").splitlines() if ln.strip()]
        new, printed = lines[printed:], max(printed, len(lines))
        if new:
            idle_since = time.monotonic()
        for line in new:
            yield line if raw else render_step(parse_step(line))
        running = status in IN_FLIGHT and got == latest
        if not follow or status in TERMINAL or (attempt is not None and got is not None and not running):
            return
        if idle_limit_s is not None and time.monotonic() - idle_since > idle_limit_s:
            yield f"(nothing new for {idle_limit_s:g}s; task {task_id} is {status})"
            return
        time.sleep(interval_s)
