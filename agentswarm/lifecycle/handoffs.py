"""Storing a handoff and moving its task to an end state (retry, merge, or give up)."""

from __future__ import annotations

import dataclasses

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session

from agentswarm.agent.contract import Handoff
from agentswarm.chaos import strike
from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.lookup import load_task, missing_is_done
from agentswarm.db.models import (
    Feature,
    FeatureStatus,
    HandoffRecord,
    MergeAttempt,
    MergeStatus,
    Task,
    TaskStatus,
)
from agentswarm.db.session import session_scope
from agentswarm.db.states import transition
from agentswarm.db.text import orchestrator_secrets
from agentswarm.lifecycle.accounting import record_llm_call
from agentswarm.lifecycle.dispatch import dispatch_pending
from agentswarm.lifecycle.features import set_feature_status
from agentswarm.lifecycle.feedback import gate_feedback, send_back
from agentswarm.lifecycle.parents import settle_parent
from agentswarm.lifecycle.progress import drop_live_steps, live_transcript
from agentswarm.queue.plan_requests import request_plan_after_commit
from agentswarm.queue.send import merge_after_commit
from agentswarm.scrubbing import clean_data, scrub_clip

TRANSCRIPT_CAP = 512 * 1024


def safe_handoff(h: Handoff, settings: Settings) -> Handoff:
    """A copy of an (untrusted) handoff whose texts are scrubbed of every secret and cleaned of NUL/surrogates.

    Done once, before anything is cut or stored: every later cut works on scrubbed text.
    """
    secrets = orchestrator_secrets(settings)
    calls = [dataclasses.replace(c, error=scrub_clip(c.error, secrets), model=scrub_clip(c.model or "", secrets) or "")
             for c in h.llm_calls]
    return dataclasses.replace(
        h, summary=scrub_clip(h.summary or "", secrets) or "", error=scrub_clip(h.error, secrets),
        transcript=scrub_clip(h.transcript or "", secrets) or "", llm_calls=calls,
        files_changed=clean_data(list(h.files_changed)), commits=clean_data(list(h.commits)),
        head_sha=scrub_clip(h.head_sha, ()),
    )


def store_handoff(db: Session, task: Task, attempt: int, h: Handoff, settings: Settings, *,
                  scrubbed: bool = False) -> bool:
    """Insert the handoff and its LLM calls once per (task, attempt); False if already stored.

    The attempt's live pieces go in the same transaction. A handoff without a transcript (the orchestrator's
    own, when the runner timed out or gave no result.json) keeps the lines read live instead.
    """
    if not scrubbed:
        h = safe_handoff(h, settings)
    exists = db.scalar(select(HandoffRecord.id).where(HandoffRecord.task_id == task.id, HandoffRecord.attempt == attempt))
    if exists:
        drop_live_steps(db, task.id, attempt)
        return False
    transcript = h.transcript or live_transcript(db, task.id, attempt)  # live pieces are stored scrubbed
    drop_live_steps(db, task.id, attempt)
    db.add(HandoffRecord(
        task_id=task.id, attempt=attempt, status=h.status, summary=h.summary or "", **h.measured(),
        prompt_tokens=int(h.tokens.get("prompt", 0)), completion_tokens=int(h.tokens.get("completion", 0)),
        llm_calls=len(h.llm_calls), duration_s=h.duration_s, error=h.error,
        transcript=transcript[:TRANSCRIPT_CAP], presubmit=clean_data(list(h.presubmit or [])),
    ))
    for call in h.llm_calls:
        record_llm_call(db, run_id=task.run_id, task_id=task.id, role="worker", model=call.model,
                        prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens,
                        latency_ms=call.latency_ms, ok=call.ok, error=call.error, settings=settings,
                        endpoint=call.endpoint, started_at=call.started_at or None,
                        usage_estimated=call.usage_estimated, attempt=attempt)
    return True


@missing_is_done
def finish_task(task_id: str, attempt: int, sandbox_id: str | None, h: Handoff, settings: Settings) -> str:
    """Record the handoff and move the task on; a no-op if someone else already moved it."""
    h = safe_handoff(h, settings)  # scrubbed and cleaned before any cut below
    with session_scope() as db:
        task = load_task(db, task_id)
        store_handoff(db, task, attempt, h, settings, scrubbed=True)
        owns = task.status == TaskStatus.running and task.attempts == attempt and (
            sandbox_id is None or task.sandbox_id in (None, sandbox_id))
        if not owns:
            record_event(db, "task.stale_handoff", f"attempt {attempt} ended after the task moved on",
                         run_id=task.run_id, task_id=task_id)
            return "stale"
        fields = {"summary": (h.summary or "")[:4000], "error": h.error}
        status = h.status
        if not h.commits and (landed := _features_landed(db, task)):
            # Nothing to change because the work is on main already (another task landed its features): done.
            transition(db, task_id, TaskStatus.running, TaskStatus.cancelled,
                       summary=f"already done: its features landed with {', '.join(landed)}", error=None)
            record_event(db, "task.already_done", f"nothing to change: its features landed with {', '.join(landed)}",
                         run_id=task.run_id, task_id=task_id, landed_by=landed)
            if task.parent_id:
                settle_parent(db, task.parent_id)
            dispatch_pending(db, task.run_id, slots=settings.max_workers)
            request_plan_after_commit(db, settings)  # its slot is free, its feature maybe ready for another
            return "already-done"
        if status == "complete" and not h.commits:
            status, fields["error"] = "blocked", h.error or "agent reported complete but made no commits"
        if status == "complete":
            transition(db, task_id, TaskStatus.running, TaskStatus.complete, **fields)
            merge_after_commit(db, task_id)
            record_event(db, "task.complete", h.summary[:200], run_id=task.run_id, task_id=task_id,
                         commits=len(h.commits), files=len(h.files_changed))
        elif status == "failed" and (failed := presubmit_failure(h)) is not None:
            outcome = send_back(db, task, TaskStatus.running, gate_feedback(
                "presubmit", failed.get("output") or h.error or "", main=task.base_sha,
                commands=[c.get("command", "") for c in failed.get("commands") or []]),
                "presubmit: the branch fails the gate's checks", summary=fields["summary"])
            if outcome == "retry":
                return "retry"
            status = "blocked"
        elif status == "failed" and task.attempts < task.max_attempts:
            transition(db, task_id, TaskStatus.running, TaskStatus.failed, **fields)
            transition(db, task_id, TaskStatus.failed, TaskStatus.pending, enqueued_at=None, finished_at=None)
            record_event(db, "task.retry", (h.error or "")[:300], run_id=task.run_id, task_id=task_id,
                         attempt=attempt)
            dispatch_pending(db, task.run_id, slots=settings.max_workers)
            return "retry"
        else:
            transition(db, task_id, TaskStatus.running, status, **fields)
            record_event(db, f"task.{status}", (h.error or h.summary or "")[:300], run_id=task.run_id,
                         task_id=task_id)
            if status == "failed":
                _mark_features(db, task, "failed")
        db.flush()
        db.refresh(task)
        if task.parent_id:
            settle_parent(db, task.parent_id)
        dispatch_pending(db, task.run_id, slots=settings.max_workers)  # its scope and its worker slot are free
        request_plan_after_commit(db, settings)  # the planner may fill the slot, or retry the feature
        strike("handoff.store")
        return status


def _features_landed(db: Session, task: Task) -> list[str]:
    """Other tasks whose landing made every one of this task's features done (none if it has no features)."""
    if not task.feature_ids:
        return []
    done = db.scalars(select(Feature.id).where(Feature.id.in_(task.feature_ids),
                                               Feature.status == FeatureStatus.done)).all()
    if set(done) != set(task.feature_ids):
        return []
    landed = db.scalars(select(Task.id).join(MergeAttempt, MergeAttempt.task_id == Task.id).where(
        Task.id != task.id, Task.run_id == task.run_id, MergeAttempt.status == MergeStatus.merged,
        Task.feature_ids.has_any(array(list(task.feature_ids)))).distinct().limit(5)).all()
    return list(landed)


def presubmit_failure(h: Handoff) -> dict | None:
    """The last presubmit run when the branch ended failing it (not when the checks could not run)."""
    runs = [r for r in h.presubmit or [] if isinstance(r, dict)]
    last = runs[-1] if runs else None
    if last is None or last.get("ok") or last.get("unavailable"):
        return None
    return last


def _mark_features(db: Session, task: Task, status: str) -> None:
    if task.feature_ids:
        set_feature_status(db, task.feature_ids, status)
