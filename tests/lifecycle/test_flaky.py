"""Flaky tests against the real Postgres: observed, quarantined after N, one fix task, released after M passes."""

from __future__ import annotations

from sqlalchemy import select

from agentswarm.config import load_settings
from agentswarm.db import Event, Run, Task, session_scope
from agentswarm.db.models import FlakyTest
from agentswarm.lifecycle.flaky import exclude_flags, file_of_test, note_runs, observe, quarantined_names

NAME = "src/world/chunk.test.ts > chunk > meshes in time"


def _run(db) -> str:
    with session_scope(db) as s:
        run = Run(max_tasks=10, max_tokens=10**6, max_dollars=1.0)
        s.add(run)
        s.flush()
        return run.id


def test_quarantine_after_n_observations_one_fix_task_and_release_after_m_passes(db, redis_client):
    run_id = _run(db)
    settings = load_settings(flaky_quarantine_after=3, flaky_release_after=2)
    for i in range(3):
        with session_scope(db) as s:
            now = observe(s, [NAME, NAME], source="gate" if i else "reconciler", tree="t" * 40, run_id=run_id,
                          settings=settings, output="FAIL ...")
        assert now == ([NAME] if i == 2 else [])
    with session_scope(db) as s:
        row = s.scalars(select(FlakyTest)).one()
        assert (row.status, row.observations, row.file) == ("quarantined", 3, "src/world/chunk.test.ts")
        assert quarantined_names(s) == {NAME}
        fix = s.get(Task, row.fix_task_id)
        assert fix.kind == "fix" and fix.status == "pending" and fix.scope == ["src/world/chunk.test.ts"]
        assert fix.context["flaky"]["test"] == NAME and fix.enqueued_at is not None  # dispatched
    with session_scope(db) as s:
        assert note_runs(s, [NAME], run_id=run_id, settings=settings) == []  # failed again: no pass counted
        assert note_runs(s, [], run_id=run_id, settings=settings) == []
        assert note_runs(s, ["src/other.test.ts > x"], run_id=run_id, settings=settings) == [NAME]
    with session_scope(db) as s:
        row = s.scalars(select(FlakyTest)).one()
        assert row.status == "released" and row.observations == 0 and quarantined_names(s) == set()
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
        assert kinds.count("flaky.observed") == 3 and kinds.count("flaky.quarantined") == 1
        assert kinds.count("flaky.released") == 1
    # Flaky again after release: quarantined again, but its one fix task is not made twice.
    for _ in range(3):
        with session_scope(db) as s:
            observe(s, [NAME], source="gate", tree=None, run_id=run_id, settings=settings)
    with session_scope(db) as s:
        assert quarantined_names(s) == {NAME}
        assert len(s.scalars(select(Task).where(Task.kind == "fix")).all()) == 1


def test_no_fix_task_without_an_active_run(db):
    settings = load_settings(flaky_quarantine_after=1)
    with session_scope(db) as s:
        assert observe(s, [NAME], source="gate", tree=None, run_id=None, settings=settings) == [NAME]
    with session_scope(db) as s:
        assert s.scalars(select(FlakyTest.fix_task_id)).one() is None


def test_exclude_flags_name_each_file_once_shell_quoted():
    assert file_of_test(NAME) == "src/world/chunk.test.ts"
    assert exclude_flags(["b.test.ts", "a dir/x.test.ts", "b.test.ts"]) == "'--exclude=a dir/x.test.ts' --exclude=b.test.ts"
    assert exclude_flags([]) == ""
