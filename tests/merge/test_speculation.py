"""Speculation at the merge stage: lanes stacked on lanes, landed in order, cancelled behind a red one, taken over.

Real Postgres, a real bare hub and the gate's real sandboxes; the gate's commands are small shell checks of the
tree (some of them sleep, so that runs are in flight together).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from datetime import timedelta

from sqlalchemy import select, update

from agentswarm.config import get_settings
from agentswarm.db import Event, MergeAttempt, session_scope
from agentswarm.db.models import GateRunRow
from agentswarm.merge import runs
from agentswarm.merge.gate import SANDBOX_FAILED, GateOptions, GateRun
from agentswarm.merge.queue import merge_task
from tests.git.hubkit import git
from tests.merge.test_gate_batch import NO_BROKEN, attempts, complete

SLEEP = "sleep 1"


def lanes(db) -> list[GateRunRow]:
    with session_scope(db) as s:
        rows = list(s.scalars(select(GateRunRow).where(GateRunRow.lane.is_not(None)).order_by(GateRunRow.created_at)))
        s.expunge_all()
        return rows


def all_runs(db) -> list[GateRunRow]:
    with session_scope(db) as s:
        rows = list(s.scalars(select(GateRunRow).order_by(GateRunRow.created_at)))
        s.expunge_all()
        return rows


def overlap(a: GateRunRow, b: GateRunRow) -> bool:
    return a.started_at < b.finished_at and b.started_at < a.finished_at


def test_speculative_lanes_run_at_once_and_land_in_order(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([SLEEP, NO_BROKEN], GATE_PARALLEL="4", GATE_BATCH_MAX="2")
    ids = [complete(db, hub, root, run_id, f"s{i}", {f"s{i}.txt": f"{i}\n"}) for i in range(6)]
    main_before = git(hub, "rev-parse", "main")
    assert merge_task(ids[0], settings) == "merged"
    rows = lanes(db)
    assert [r.lane for r in rows] == [0, 1, 2] and all(r.state == "done" and r.outcome == "landed" for r in rows)
    # Lane k+1 was stacked on lane k's tip and tested while lane k was still in the gate.
    assert rows[0].base == main_before and rows[1].base == rows[0].sha and rows[2].base == rows[1].sha
    assert overlap(rows[0], rows[1]) and overlap(rows[1], rows[2])
    # Landed in order: main went from one lane's tip to the next, and each lane's tasks landed there.
    merged = {a.task_id: a for a in attempts(db)}
    assert all(a.status == "merged" for a in merged.values()) and set(merged) == set(ids)
    for r in rows:
        for e in r.spec["entries"]:
            assert merged[e["task_id"]].main_after == r.sha and merged[e["task_id"]].main_before == r.base
    assert git(hub, "rev-parse", "main") == rows[2].sha
    first_parent = git(hub, "rev-list", "--first-parent", f"{main_before}..main").split()
    assert {r.sha for r in rows} <= set(first_parent)


def test_a_red_lane_cancels_the_lanes_behind_it_without_waiting_for_them(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    # The lane stacked on the broken one would take a minute: cancelled, it is stopped, not waited for.
    slow_on_broken = "if test -e BROKEN-b && test -e SLOW; then sleep 60; fi"
    settings = configure([SLEEP, slow_on_broken, NO_BROKEN], GATE_PARALLEL="3", GATE_BATCH_MAX="2")
    ids = [complete(db, hub, root, run_id, "a", {"a.txt": "a\n"}),
           complete(db, hub, root, run_id, "b", {"b.txt": "b\n"}),
           complete(db, hub, root, run_id, "c", {"c.txt": "c\n"}),
           complete(db, hub, root, run_id, "broken", {"BROKEN-b": "x\n"}),
           complete(db, hub, root, run_id, "slow", {"SLOW": "s\n"}),
           complete(db, hub, root, run_id, "d", {"d.txt": "d\n"})]
    started = time.monotonic()
    merge_task(ids[0], settings)
    assert time.monotonic() - started < 45
    status = {a.task_id: a.status for a in attempts(db)}
    assert status[ids[3]] == "rejected"
    assert all(status[t] == "merged" for t in ids if t != ids[3])
    assert "BROKEN-b" not in git(hub, "ls-tree", "--name-only", "main")
    rows = lanes(db)
    third = next(r for r in rows if r.lane == 2)
    assert third.state == "cancelled" and third.outcome == "cancelled" and third.result == {}
    assert next(r for r in rows if r.lane == 1).outcome == "red"
    with session_scope(db) as s:
        cancelled = s.scalars(select(Event).where(Event.kind == "gate.cancelled")).one()
    assert cancelled.data["gate_runs"] == [third.id] and set(cancelled.data["tasks"]) == {ids[4], ids[5]}


def test_bisection_tests_both_halves_at_once(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([SLEEP, NO_BROKEN], GATE_PARALLEL="2", GATE_BATCH_MAX="4")
    ids = [complete(db, hub, root, run_id, "p", {"p.txt": "p\n"}),
           complete(db, hub, root, run_id, "q", {"q.txt": "q\n"}),
           complete(db, hub, root, run_id, "broken", {"BROKEN-r": "x\n"}),
           complete(db, hub, root, run_id, "s", {"s.txt": "s\n"})]
    merge_task(ids[0], settings)
    bisect = {r.stage: r for r in all_runs(db) if r.stage.startswith("bisect")}
    # Round one tests the prefixes of 1 and 3 branches at once (green, red); round two the prefix of 2 (green).
    assert sorted(bisect) == ["bisect 1/4", "bisect 2/4", "bisect 3/4"]
    assert overlap(bisect["bisect 1/4"], bisect["bisect 3/4"])
    assert bisect["bisect 2/4"].created_at >= bisect["bisect 3/4"].finished_at
    status = {a.task_id: a.status for a in attempts(db)}
    assert status == {ids[0]: "merged", ids[1]: "merged", ids[2]: "rejected", ids[3]: "merged"}


def test_a_result_for_another_tree_is_refused_and_the_run_asked_for_again(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_BROKEN], GATE_RUNNER="queue", GATE_PARALLEL="1")  # no gate worker: we are it
    tid = complete(db, hub, root, run_id, "t", {"t.txt": "t\n"})
    main_before = git(hub, "rev-parse", "main")
    out: dict[str, str] = {}
    merging = threading.Thread(target=lambda: out.setdefault("r", merge_task(tid, settings)))
    merging.start()
    try:
        deadline = time.monotonic() + 30
        while not lanes(db) and time.monotonic() < deadline:
            time.sleep(0.1)
        row = lanes(db)[0]
        other_tree = git(hub, "rev-parse", f"{main_before}^{{tree}}")
        forged = {"sha": row.sha, "tree": other_tree, "full": False, "files": 1, "commands": [], "output": "",
                  "seconds": 0.1, "cannot_run": None, "planned": 0, "quarantined": []}
        with session_scope(db) as s:  # a worker reports green, but for a tree the queue did not ask for
            s.execute(update(GateRunRow).where(GateRunRow.id == row.id).values(
                state="done", worker="forger", result=forged, tested_tree=other_tree))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and lanes(db)[0].state != "queued":
            time.sleep(0.1)
        assert lanes(db)[0].state == "queued" and git(hub, "rev-parse", "main") == main_before
        with session_scope(db) as s:
            assert s.scalars(select(Event).where(Event.kind == "gate.requeued")).one().data["gate_run"] == row.id
        assert runs.take(row.id, get_settings()) == "green"  # a real run of the tree asked for
        merging.join(30)
    finally:
        merging.join(60)
    assert out["r"] == "merged" and git(hub, "rev-parse", "main") == row.sha


def _merge_in_child(task_id: str) -> None:
    get_settings.cache_clear()
    merge_task(task_id, get_settings())


def test_a_killed_merge_workers_runs_in_flight_are_taken_over(gate_hub, db, monkeypatch):
    hub, root, run_id, configure = gate_hub
    configure([NO_BROKEN], GATE_RUNNER="queue", GATE_PARALLEL="3", GATE_BATCH_MAX="2")
    ids = [complete(db, hub, root, run_id, f"k{i}", {f"k{i}.txt": f"{i}\n"}) for i in range(6)]
    main_before = git(hub, "rev-parse", "main")
    child = multiprocessing.get_context("spawn").Process(target=_merge_in_child, args=(ids[0],))
    child.start()
    deadline = time.monotonic() + 60
    while len(lanes(db)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGKILL)  # with three lanes queued and no gate worker to take them
    child.join(10)
    left = lanes(db)
    assert [r.state for r in left] == ["queued"] * 3 and git(hub, "rev-parse", "main") == main_before
    # One of them was taken by a worker that died: its lease has run out.
    with session_scope(db) as s:
        s.execute(update(GateRunRow).where(GateRunRow.id == left[1].id).values(
            state="running", worker="dead/1/x", attempts=1,
            lease_until=GateRunRow.created_at - timedelta(seconds=1)))
    monkeypatch.setenv("GATE_RUNNER", "inline")  # the successor runs its gate runs itself
    get_settings.cache_clear()
    assert merge_task(ids[0], get_settings()) == "merged"
    after = lanes(db)
    assert [r.id for r in after] == [r.id for r in left]  # no lane stacked again: the three were adopted
    assert all(r.outcome == "landed" for r in after) and git(hub, "rev-parse", "main") == left[2].sha
    assert after[1].attempts == 2  # the dead worker's run was given to another
    with session_scope(db) as s:
        adopted = s.scalars(select(Event).where(Event.kind == "gate.adopted")).one()
        assert adopted.data["adopted"] == [r.id for r in left]
        assert s.scalar(select(MergeAttempt.status).where(MergeAttempt.task_id == ids[5])) == "merged"


def test_a_red_batch_is_bisected_aside_while_the_line_lands_the_others(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    slow_when_broken = "if test -e BROKEN-x; then sleep 4; fi"  # every run holding the culprit takes a while
    settings = configure([slow_when_broken, NO_BROKEN], GATE_PARALLEL="2", GATE_BATCH_MAX="2")
    ids = [complete(db, hub, root, run_id, "a", {"a.txt": "a\n"}),
           complete(db, hub, root, run_id, "broken", {"BROKEN-x": "x\n"}),
           complete(db, hub, root, run_id, "c", {"c.txt": "c\n"}),
           complete(db, hub, root, run_id, "d", {"d.txt": "d\n"})]
    merge_task(ids[0], settings)
    by_task = {a.task_id: a for a in attempts(db)}
    assert {t: a.status for t, a in by_task.items()} == {ids[0]: "merged", ids[1]: "rejected", ids[2]: "merged",
                                                        ids[3]: "merged"}
    # c and d landed while the red batch was still being bisected; a, its innocent, came back to the pool after.
    blamed = by_task[ids[1]].finished_at
    assert by_task[ids[2]].finished_at < blamed and by_task[ids[3]].finished_at < blamed
    assert by_task[ids[0]].finished_at > blamed
    assert "BROKEN-x" not in git(hub, "ls-tree", "--name-only", "main")
    with session_scope(db) as s:
        culprit = s.scalars(select(Event).where(Event.kind == "gate.culprit")).one()
    assert culprit.task_id == ids[1]


def test_a_sandbox_that_fails_to_start_is_tried_again_not_reported(gate_hub, db, monkeypatch):
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_BROKEN], GATE_RUNNER="queue")  # nothing takes the run but this test
    sha = git(hub, "rev-parse", "main")
    tree = git(hub, "rev-parse", "main^{tree}")
    gate_id = runs.submit(settings, runs.Request(sha=sha, base=sha, tree=tree, options=GateOptions(), run_id=run_id))
    real, calls = runs.run_gate, []

    def flaky_sandbox(*args, **kw):
        calls.append(1)
        if len(calls) == 1:  # bwrap raced another sandbox's teardown: the sandbox broke, not the tree
            return GateRun(sha=sha, tree=tree, full=False, files=0,
                           cannot_run=f"{SANDBOX_FAILED}: bwrap: Can't bind mount /oldroot/")
        return real(*args, **kw)

    monkeypatch.setattr(runs, "run_gate", flaky_sandbox)
    assert runs.take(gate_id, settings) == "green" and len(calls) == 2
    assert runs.states([gate_id])[gate_id].result["cannot_run"] is None
