"""Gate runs as work: the merge queue asks, a gate worker takes a run under a lease, the result names its tree.

A run is a `gate_runs` row (Postgres is the truth; the Celery message on the `gate` queue carries its id only):

    queued --(a worker claims it, lease)--> running --(the worker, still holding it)--> done
       \\_____________________(the merge queue no longer wants it)______________________/--> cancelled

- A worker claims a queued run, or a running one whose lease ran out (its worker died), in one UPDATE; the
  message delivered twice, or to two workers, runs it once. It renews the lease every quarter of GATE_LEASE_S
  while it runs, and stops the run (kills its sandbox) as soon as the row says cancelled or names another worker.
- The result is written only by the worker that holds the run, with the tree it tested; the merge queue uses it
  only if that tree is the tree it asked for (`result_of`).
- The merge queue gives a run whose lease ran out to another worker (`requeue_lost`), and a run no worker took
  in GATE_QUEUE_WAIT_S, or lost GATE_RUN_ATTEMPTS times, cannot run.

GATE_RUNNER=inline runs the same `take` in a thread of the merge worker instead of sending a message.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, and_, or_, select, update
from sqlalchemy.orm import Session

from agentswarm.config import GateRunner, Settings, get_settings
from agentswarm.db.events import record_event
from agentswarm.db.models import GateRunRow
from agentswarm.db.session import session_scope
from agentswarm.git.repo import GitError
from agentswarm.merge.gate import SANDBOX_FAILED, GateOptions, GateRun, Watch, run_gate

log = logging.getLogger(__name__)
RENEW_S = 2.0  # how soon a worker sees its run cancelled
ATTEMPTS = 3
SANDBOX_RETRIES = 2  # new sandboxes for a run whose sandbox failed to start (bwrap racing other sandboxes' mounts)  # a run whose worker died this many times cannot run (the tree may be what kills them)
WAITING = ("queued", "running")


@dataclass(frozen=True)
class Request:
    """What the merge queue asks of a gate run."""

    sha: str
    base: str
    tree: str
    options: GateOptions
    stage: str = "batch"
    batch_id: str = ""
    run_id: str | None = None
    lane: int | None = None
    spec: dict[str, Any] | None = None


def _updated(db: Session, stmt: Any) -> CursorResult:
    """Run an UPDATE; its result (which has rowcount)."""
    return cast(CursorResult, db.execute(stmt))


def _now() -> datetime:
    return datetime.now(UTC)


# -- the merge queue's side ----------------------------------------------------------------------------------


def submit(settings: Settings, req: Request) -> str:
    """Write the run (queued, committed) and hand it to a gate worker; its id."""
    run_id = uuid.uuid4().hex[:16]
    with session_scope() as db:
        db.add(GateRunRow(id=run_id, run_id=req.run_id, batch_id=req.batch_id, stage=req.stage, lane=req.lane,
                          sha=req.sha, base=req.base, tree=req.tree, spec=req.spec or {}, state="queued",
                          options={"full": req.options.full, "quarantined": req.options.quarantined,
                                   "branches": req.options.branches, "only": req.options.only}))
    dispatch(settings, run_id)
    return run_id


def dispatch(settings: Settings, run_id: str) -> None:
    """Send the run to the `gate` queue, or (GATE_RUNNER=inline) start it in a thread of this process."""
    if settings.gate_runner is GateRunner.inline:
        threading.Thread(target=take, args=(run_id, settings), name=f"gate-{run_id[:8]}", daemon=True).start()
        return
    from agentswarm.queue.send import send_gate_run

    send_gate_run(run_id)


def cancel(ids: list[str], outcome: str = "cancelled") -> int:
    """The merge queue no longer wants these runs: a worker running one stops it. How many were still waiting."""
    if not ids:
        return 0
    with session_scope() as db:
        res = _updated(db, update(GateRunRow).where(GateRunRow.id.in_(ids), GateRunRow.state.in_(WAITING))
                         .values(state="cancelled", outcome=outcome, finished_at=_now(), lease_until=None))
        db.execute(update(GateRunRow).where(GateRunRow.id.in_(ids), GateRunRow.outcome.is_(None))
                   .values(outcome=outcome))
        return res.rowcount or 0


def mark(ids: list[str], outcome: str) -> None:
    """What the merge queue made of these runs' results (landed, red, ...): they are used, never adopted again."""
    if ids:
        with session_scope() as db:
            db.execute(update(GateRunRow).where(GateRunRow.id.in_(ids)).values(outcome=outcome))


def states(ids: list[str]) -> dict[str, GateRunRow]:
    """The rows of these runs, detached (read them freely)."""
    with session_scope() as db:
        rows = list(db.scalars(select(GateRunRow).where(GateRunRow.id.in_(ids))))
        db.expunge_all()
    return {r.id: r for r in rows}


def result_of(row: GateRunRow) -> GateRun | None:
    """The run's result, if it is done and names the tree that was asked for; None otherwise (see `stale`)."""
    if row.state != "done" or not row.result:
        return None
    if row.tested_tree != row.tree:
        return None
    return GateRun.from_dict(row.result)


def stale(row: GateRunRow) -> bool:
    """A result for a tree other than the one asked for: refused, and the run asked for again."""
    return row.state == "done" and bool(row.result) and row.tested_tree != row.tree


def requeue(settings: Settings, row: GateRunRow, why: str) -> None:
    """Ask for the run again (a stale result, a lost worker): queued afresh and sent again."""
    with session_scope() as db:
        res = _updated(db, update(GateRunRow).where(GateRunRow.id == row.id, GateRunRow.state.in_(("done", "running")))
                         .values(state="queued", worker=None, lease_until=None, result={}, tested_tree=None,
                                 seconds=None, finished_at=None, started_at=_now()))  # queued again from now
        if not res.rowcount:
            return
        record_event(db, "gate.requeued", f"gate run {row.id} ({row.stage} at {row.sha[:10]}) asked for again: {why}",
                     run_id=row.run_id, gate_run=row.id, why=why, worker=row.worker)
    log.warning("gate run %s asked for again: %s", row.id, why)
    dispatch(settings, row.id)


def give_up(row: GateRunRow, why: str) -> None:
    """The run cannot run (no worker took it, its workers kept dying): a cannot-run result the queue holds on."""
    result = GateRun(sha=row.sha, tree=row.tree, full=False, files=0, cannot_run=why).to_dict()
    with session_scope() as db:
        db.execute(update(GateRunRow).where(GateRunRow.id == row.id, GateRunRow.state.in_(WAITING))
                   .values(state="done", result=result, tested_tree=row.tree, finished_at=_now(), seconds=0.0,
                           lease_until=None))


def watch_over(settings: Settings, rows: dict[str, GateRunRow]) -> None:
    """Runs whose worker died go to another worker; runs no worker takes, or that keep killing workers, give up."""
    now = _now()
    for row in rows.values():
        if row.state == "running" and row.lease_until is not None and row.lease_until < now:
            if row.attempts >= ATTEMPTS:
                give_up(row, f"its gate workers died {row.attempts} times")
            else:
                requeue(settings, row, f"the lease of worker {row.worker} ran out")
        elif row.state == "queued" and (now - (row.started_at or row.created_at)).total_seconds() > \
                settings.gate_queue_wait_s:
            give_up(row, f"no gate worker took it in {settings.gate_queue_wait_s:.0f}s (is a `gate` worker up?)")
        elif stale(row):
            requeue(settings, row, f"its result tested tree {str(row.tested_tree)[:10]}, not {row.tree[:10]}")


def wait_any(settings: Settings, ids: list[str], *, every: float = 0.2, timeout: float | None = None,
             watch: list[str] | None = None) -> dict[str, GateRunRow]:
    """Block until at least one of these runs is done (or cancelled); their rows. Meanwhile watches over them
    and the `watch` runs (lost workers, runs nobody takes, stale results)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        rows = states(list({*ids, *(watch or [])}))
        mine = {i: rows[i] for i in ids if i in rows}
        if any(r.state in ("done", "cancelled") and not stale(r) for r in mine.values()) or not mine:
            return mine
        watch_over(settings, rows)
        if deadline is not None and time.monotonic() > deadline:
            return mine
        time.sleep(every)


# -- the gate worker's side ----------------------------------------------------------------------------------


def _worker_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


def claim(run_id: str, worker: str, lease_s: float) -> GateRunRow | None:
    """Take the run if it is queued, or running on a lease that ran out; the row, detached, or None."""
    now = _now()
    with session_scope() as db:
        row = db.scalars(update(GateRunRow).where(
            GateRunRow.id == run_id,
            or_(GateRunRow.state == "queued",
                and_(GateRunRow.state == "running", GateRunRow.lease_until < now)))
            .values(state="running", worker=worker, lease_until=now + timedelta(seconds=lease_s),
                    attempts=GateRunRow.attempts + 1, started_at=now)
            .returning(GateRunRow)).first()
        if row is not None:
            db.expunge(row)
        return row


def _renew(run_id: str, worker: str, lease_s: float) -> bool:
    """Extend the lease; False once the run is not this worker's any more (cancelled, or given to another)."""
    with session_scope() as db:
        res = _updated(db, update(GateRunRow).where(GateRunRow.id == run_id, GateRunRow.worker == worker,
                                                  GateRunRow.state == "running")
                         .values(lease_until=_now() + timedelta(seconds=lease_s)))
        return bool(res.rowcount)


def _keep_lease(run_id: str, worker: str, lease_s: float, watch: Watch, done: threading.Event) -> None:
    """Renew the lease (and look for a cancellation) every couple of seconds, at most a quarter of the lease."""
    while not done.wait(max(0.2, min(RENEW_S, lease_s / 4))):
        try:
            mine = _renew(run_id, worker, lease_s)
        except Exception:  # noqa: BLE001 - Postgres away for a moment: the lease may run out, the queue decides
            log.warning("gate run %s: could not renew the lease", run_id, exc_info=True)
            continue
        if not mine:
            log.info("gate run %s is not ours any more (cancelled or given to another worker): stopping it", run_id)
            watch.stop()
            return


def _finish(run_id: str, worker: str, run: GateRun) -> bool:
    with session_scope() as db:
        res = _updated(db, update(GateRunRow).where(GateRunRow.id == run_id, GateRunRow.worker == worker,
                                                  GateRunRow.state == "running")
                         .values(state="done", result=run.to_dict(), tested_tree=run.tree or None,
                                 seconds=run.seconds, finished_at=_now(), lease_until=None))
        return bool(res.rowcount)


def hub_for(settings: Settings, shas: list[str]) -> Settings:
    """The settings a run uses: HUB_PATH itself, or (GATE_HUB_URL) a mirror on this machine holding these shas."""
    if not settings.gate_hub_url:
        return settings
    from agentswarm.git.mirror import fetch_shas

    mirror = mirror_path(settings)
    fetch_shas(settings.gate_hub_url, settings.gate_hub_token,
               mirror, shas)
    return settings.model_copy(update={"hub_path": mirror})


def mirror_path(settings: Settings) -> Path:
    """A gate worker's copy of the hub, beside its sandboxes (its dependency cache is beside it)."""
    return settings.sandbox_root.resolve().parent / "gate-hub.git"


def take(run_id: str, settings: Settings | None = None) -> str:
    """A gate worker's handling of one run: claim it, run it (renewing the lease), report it. Safe to run twice."""
    settings = settings or get_settings()
    worker = _worker_name()
    row = claim(run_id, worker, settings.gate_lease_s)
    if row is None:
        return "not-waiting"
    watch, done = Watch(), threading.Event()
    keeper = threading.Thread(target=_keep_lease, args=(run_id, worker, settings.gate_lease_s, watch, done),
                              name=f"lease-{run_id[:8]}", daemon=True)
    keeper.start()
    opts = row.options or {}
    options = GateOptions(full=bool(opts.get("full")), quarantined=str(opts.get("quarantined") or ""),
                          branches=int(opts.get("branches") or 1), only=opts.get("only"))
    try:
        try:
            local = hub_for(settings, [row.sha, row.base])
            run = run_gate(local, row.sha, row.base, options, watch=watch)
            for _ in range(SANDBOX_RETRIES):  # a sandbox that failed to start says nothing of the tree: again
                if not (run.cannot_run or "").startswith(SANDBOX_FAILED) or watch.stopped.wait(1.0):
                    break
                log.warning("gate run %s: %s; trying a new sandbox", run_id, run.cannot_run)
                run = run_gate(local, row.sha, row.base, options, watch=watch)
        except GitError as exc:
            run = GateRun(sha=row.sha, tree="", full=False, files=0, cannot_run=f"fetching the tree failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - reported as the run's result, not left to a lease running out
            log.exception("gate run %s failed", run_id)
            run = GateRun(sha=row.sha, tree="", full=False, files=0,
                          cannot_run=f"the gate worker failed: {type(exc).__name__}: {exc}")
        if settings.gate_delay_s and not watch.stopped.is_set():
            watch.stopped.wait(settings.gate_delay_s)  # a slow CI, without its CPU
            run.seconds = round(run.seconds + settings.gate_delay_s, 2)
    finally:
        done.set()
        keeper.join(timeout=5)
    if watch.stopped.is_set():
        return "stopped"
    if not run.tree:
        run.tree = row.tree if run.cannot_run else ""
    return run.result if _finish(run_id, worker, run) else "not-ours"
