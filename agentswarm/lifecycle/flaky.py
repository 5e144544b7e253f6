"""Flaky tests: a test seen failing and then passing on the same tree is counted, quarantined, released.

Observations come from the merge queue's gate (a red batch whose culprit passes when tested again)
and from the reconciler (a red main that passes when its tests run again). After
FLAKY_QUARANTINE_AFTER observations a test is quarantined: the gate leaves its file out (the
`{quarantined}` placeholder of the gate's commands becomes vitest `--exclude=` flags) and passes a
run whose only failures are quarantined tests; the reconciler still runs it, reports it, and counts
the runs it passes. One fix task is made for it, once. After FLAKY_RELEASE_AFTER reconciler runs
in a row that pass it, it is released and the gate runs it again.

Rows are per test name and outlive runs: a test flaky in one run is still flaky in the next.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from agentswarm.agent.checks import QUARANTINED
from agentswarm.config import Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import FlakyStatus, FlakyTest, Run, RunStatus, Task, TaskKind
from agentswarm.db.text import stored_text
from agentswarm.lifecycle.dispatch import dispatch_pending

__all__ = ["QUARANTINED", "observe", "quarantined_tests", "quarantined_names", "flaky_names", "exclude_flags",
           "note_runs", "file_of_test"]
FIX_PRIORITY = 4  # below work that breaks main (1) and above new features (5): a quarantined test hides bugs


def file_of_test(name: str) -> str:
    """The file of a vitest test name ("file > suite > test")."""
    return name.split(" > ", 1)[0].strip()


def observe(db: Session, names: Iterable[str], *, source: str, tree: str | None, run_id: str | None,
            settings: Settings, output: str = "") -> list[str]:
    """Count one red-then-green observation of each test; returns the tests this quarantined."""
    now, quarantined = datetime.now(UTC), []
    for name in dict.fromkeys(n for n in names if n):
        db.execute(insert(FlakyTest).values(name=name, file=file_of_test(name), status=FlakyStatus.observed,
                                            observations=0, passes_in_row=0, last_source=source)
                   .on_conflict_do_nothing(index_elements=["name"]))
        row = db.scalars(select(FlakyTest).where(FlakyTest.name == name).with_for_update()).one()
        row.observations += 1
        row.last_source, row.last_tree, row.last_seen_at = source, tree, now
        row.run_id = run_id or row.run_id
        record_event(db, "flaky.observed", f"{name}: red, then green on the same tree ({source})", run_id=run_id,
                     test=name, observations=row.observations, source=source, tree=tree)
        if row.status is not FlakyStatus.quarantined and row.observations >= settings.flaky_quarantine_after:
            row.status, row.quarantined_at, row.passes_in_row = FlakyStatus.quarantined, now, 0
            quarantined.append(name)
            record_event(db, "flaky.quarantined", f"{name}: quarantined after {row.observations} observations; "
                         "the gate leaves it out, the reconciler still runs it", run_id=run_id, test=name)
            if row.fix_task_id is None:
                row.fix_task_id = _fix_task(db, row, run_id, settings, output)
    return quarantined


def _fix_task(db: Session, row: FlakyTest, run_id: str | None, settings: Settings, output: str) -> str | None:
    """One fix task for a newly quarantined test, in the active run (None when no run is active)."""
    run = db.get(Run, run_id) if run_id else None
    if run is None or run.status != RunStatus.active:
        return None
    task = Task(run_id=run.id, kind=TaskKind.fix, priority=FIX_PRIORITY, branch="pending", scope=[row.file],
                max_attempts=settings.max_attempts, title=stored_text(f"Make the flaky test deterministic: {row.name}",
                                                                      200, settings),
                description=stored_text(
                    f"The test `{row.name}` failed and then passed on the same tree {row.observations} times, so it "
                    "is quarantined: the merge queue no longer runs it. Find why it depends on chance, time or "
                    "order (random numbers, timers, shared state, test order) and make it deterministic, "
                    "without deleting what it checks.", None, settings),
                context={"flaky": {"test": row.name, "observations": row.observations,
                                   "output": stored_text(output, 4000, settings)}})
    db.add(task)
    db.flush()
    task.branch = f"swarm/{task.id}"
    record_event(db, "task.created", f"fix: flaky test {row.name}", run_id=run.id, task_id=task.id)
    dispatch_pending(db, run.id)
    return task.id


def quarantined_tests(db: Session) -> list[FlakyTest]:
    """The tests under quarantine now, oldest quarantine first."""
    return list(db.scalars(select(FlakyTest).where(FlakyTest.status == FlakyStatus.quarantined)
                           .order_by(FlakyTest.quarantined_at, FlakyTest.id)))


def quarantined_names(db: Session) -> set[str]:
    return {row.name for row in quarantined_tests(db)}


def flaky_names(db: Session) -> set[str]:
    """Tests with a flaky history now (observed or quarantined; not released): a red of theirs proves no break."""
    return set(db.scalars(select(FlakyTest.name).where(FlakyTest.status.in_([FlakyStatus.observed,
                                                                            FlakyStatus.quarantined]))))


def exclude_flags(files: Iterable[str]) -> str:
    """What `{quarantined}` becomes in a vitest command: one `--exclude=<file>` per quarantined file."""
    return " ".join(shlex.quote(f"--exclude={f}") for f in sorted(set(files)))


def note_runs(db: Session, failing: Iterable[str], *, run_id: str | None, settings: Settings) -> list[str]:
    """A reconciler run that ran the whole suite: quarantined tests that passed count one more; returns released."""
    failed, released, now = set(failing), [], datetime.now(UTC)
    for row in quarantined_tests(db):
        if row.name in failed:
            row.passes_in_row = 0
            continue
        row.passes_in_row += 1
        if row.passes_in_row >= settings.flaky_release_after:
            row.status, row.released_at, row.observations = FlakyStatus.released, now, 0
            released.append(row.name)
            record_event(db, "flaky.released", f"{row.name}: passed {row.passes_in_row} runs in a row; the gate "
                         "runs it again", run_id=run_id, test=row.name)
    return released
