import multiprocessing as mp

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from agentswarm.db import Run, Task, TaskStatus, session_scope
from agentswarm.db.migrate import upgrade
from agentswarm.db.models import Base
from agentswarm.db.session import get_engine
from agentswarm.db.states import TRANSITIONS, check_transition, transition
from agentswarm.errors import IllegalTransition


def make_run(session) -> Run:
    run = Run(max_tasks=100, max_tokens=10**6, max_dollars=10.0)
    session.add(run)
    session.flush()
    return run


def make_tasks(url, n):
    with session_scope(url) as s:
        run = make_run(s)
        tasks = [Task(run_id=run.id, description=f"t{i}", branch="x") for i in range(n)]
        s.add_all(tasks)
        s.flush()
        for t in tasks:
            t.branch = f"swarm/{t.id}"
        return [t.id for t in tasks]


def test_models_and_migrations_agree(db):
    upgrade(db)  # a second upgrade changes nothing
    with get_engine(db).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_legal_and_illegal_transitions(db):
    [tid] = make_tasks(db, 1)
    with session_scope(db) as s:
        assert transition(s, tid, "pending", "assigned")
        assert not transition(s, tid, "pending", "assigned")  # already taken
        assert transition(s, tid, "assigned", "running")
        assert transition(s, tid, "running", "complete")
    with session_scope(db) as s:
        task = s.get(Task, tid)
        assert task.status == "complete" and task.finished_at and task.started_at
    with pytest.raises(IllegalTransition):
        check_transition("complete", "running")
    with session_scope(db) as s, pytest.raises(IllegalTransition):
        transition(s, tid, "pending", "complete")
    for src, dsts in TRANSITIONS.items():
        for dst in TaskStatus:
            if dst not in dsts:
                with pytest.raises(IllegalTransition):
                    check_transition(src, dst)


def _racer(url, ids, barrier, out):
    from agentswarm.db import session_scope as scope
    from agentswarm.db.states import transition as move

    won = []
    for tid in ids:
        barrier.wait()
        with scope(url) as s:
            if move(s, tid, "pending", "assigned", sandbox_id=f"pid{mp.current_process().pid}"):
                won.append(tid)
    out.put(won)


def test_two_processes_never_both_take_a_task(db):
    ids = make_tasks(db, 150)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(db, ids, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    a, b = (set(r) for r in results)
    assert not a & b, "a task was taken twice"
    assert a | b == set(ids)
    with session_scope(db) as s:
        statuses = set(s.scalars(select(Task.status)).all())
    assert statuses == {"assigned"}
