"""The gated merge queue at the merge-stage level: batches, bisection, culprits, clashes, flaky reds, holds.

Real Postgres, a real bare hub and the gate's real sandboxes (bubblewrap when available), a fresh
one per run; the gate's commands are small shell checks of the tree so that every outcome is exact.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from sqlalchemy import select

from agentswarm.db import Event, MergeAttempt, Task, session_scope
from agentswarm.db.models import FlakyTest, GateRunRow
from agentswarm.db.states import MAX_MERGE_FAILURES, transition
from agentswarm.merge import batch as batch_mod
from agentswarm.merge.gate import GATE_RUN, run_gate
from agentswarm.merge.queue import merge_task
from agentswarm.sandbox.factory import check_backend_for
from tests.git.hubkit import branch, git
from tests.merge.coin import Coin
from tests.merge.test_merge_queue import _complete_task, _hand_off

NO_BROKEN = "! ls | grep -q '^BROKEN'"  # red when the tree has a file named BROKEN*
NO_PAIR = "! { test -e PAIR-A && test -e PAIR-B; }"  # red only when both halves of a pair are present


@pytest.fixture
def coin(gate_hub):
    tossed = Coin(gate_hub[0])
    yield tossed
    tossed.close()


def complete(db, hub, root, run_id: str, name: str, files: dict[str, str], **kw) -> str:
    head = branch(hub, f"swarm/{name}", root, files)[-1]
    with session_scope(db) as s:
        return _complete_task(s, run_id, f"swarm/{name}", list(files), head, **kw)


def attempts(db) -> list[MergeAttempt]:
    with session_scope(db) as s:
        rows = s.scalars(select(MergeAttempt).order_by(MergeAttempt.id)).all()
        s.expunge_all()
        return rows


def gate_trees(db) -> dict[str, str]:
    with session_scope(db) as s:
        return {e.data["tree"]: e.data["result"] for e in s.scalars(select(Event).where(Event.kind == "gate.run"))}


def test_a_green_batch_lands_in_one_move_after_one_gate_run(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_BROKEN])
    ids = [complete(db, hub, root, run_id, f"ok{i}", {f"f{i}.txt": f"{i}\n"}) for i in range(3)]
    before = git(hub, "rev-parse", "main")
    assert merge_task(ids[0], settings) == "merged"
    rows = attempts(db)
    assert [r.status for r in rows] == ["merged"] * 3
    assert len({r.batch_id for r in rows}) == 1 and sorted(r.position for r in rows) == [0, 1, 2]
    main = git(hub, "rev-parse", "main")
    assert {r.main_after for r in rows} == {main} and {r.main_before for r in rows} == {before}
    assert git(hub, "rev-parse", "main^{tree}") == rows[0].tree_sha
    ran = rows[0].gate["commands"]
    assert [c["command"] for c in ran] == [NO_BROKEN] and ran[0]["exit_code"] == 0 and ran[0]["duration_s"] >= 0
    assert list(gate_trees(db).values()) == ["green"]  # one gate run for the batch
    for i in range(3):
        assert git(hub, "show", f"main:f{i}.txt") == str(i)
    assert merge_task(ids[1], settings).startswith("already:")  # their own messages are no-ops now


def test_a_red_batch_is_bisected_the_innocent_land_and_the_culprit_goes_back_to_its_author(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_BROKEN])
    ids = [complete(db, hub, root, run_id, "a", {"a.txt": "a\n"}),
           complete(db, hub, root, run_id, "b", {"BROKEN-b": "oops\n"}),
           complete(db, hub, root, run_id, "c", {"c.txt": "c\n"}),
           complete(db, hub, root, run_id, "d", {"d.txt": "d\n"})]
    assert merge_task(ids[0], settings) == "merged"
    by_task = {r.task_id: r for r in attempts(db)}
    assert {t: r.status for t, r in by_task.items()} == {ids[0]: "merged", ids[1]: "rejected", ids[2]: "merged",
                                                          ids[3]: "merged"}
    culprit = by_task[ids[1]]
    assert culprit.gate["result"] == "red" and "$ " + NO_BROKEN in culprit.gate["output"]
    assert culprit.gate["tested_with"] == ["swarm/a"] and culprit.gate["clashes_with"] is None
    main = git(hub, "rev-parse", "main")
    assert "BROKEN-b" not in git(hub, "ls-tree", "--name-only", main)
    # main took only trees the gate passed.
    trees = gate_trees(db)
    for r in by_task.values():
        if r.status == "merged":
            assert trees[git(hub, "rev-parse", f"{r.main_after}^{{tree}}")] == "green"
    with session_scope(db) as s:
        task = s.get(Task, ids[1])
        assert task.status == "pending" and task.priority == 1 and task.attempts == 1
        assert task.context["gate"]["source"] == "merge-queue" and NO_BROKEN in task.context["gate"]["output"]
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
    assert "gate.culprit" in kinds and "task.retry" in kinds
    # The red batch landed its green prefix and blamed its culprit; what came after the culprit went back to the
    # pool and made the next batch, stacked on the new main.
    batch = [e for e in kinds if e == "gate.batch"]
    assert len(batch) == 2


def test_two_branches_that_only_fail_together_blame_the_later_and_name_the_earlier(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_PAIR])
    ids = [complete(db, hub, root, run_id, "x", {"x.txt": "x\n"}),
           complete(db, hub, root, run_id, "pa", {"PAIR-A": "a\n"}),
           complete(db, hub, root, run_id, "y", {"y.txt": "y\n"}),
           complete(db, hub, root, run_id, "pb", {"PAIR-B": "b\n"})]
    merge_task(ids[0], settings)
    by_task = {r.task_id: r for r in attempts(db)}
    assert by_task[ids[3]].status == "rejected"
    assert all(by_task[i].status == "merged" for i in ids[:3])
    assert by_task[ids[3]].gate["clashes_with"]["task_id"] == ids[1]
    with session_scope(db) as s:
        assert s.get(Task, ids[3]).context["gate"]["clashes_with"]["branch"] == "swarm/pa"


def test_a_red_that_passes_on_the_same_tree_is_flaky_and_lands(gate_hub, db, coin):
    hub, root, run_id, configure = gate_hub
    settings = configure([coin.command()])
    ids = [complete(db, hub, root, run_id, "f", {"f.txt": "f\n"})]
    assert merge_task(ids[0], settings) == "merged"
    (row,) = attempts(db)
    assert row.gate["flaky"] is True and row.gate["flaky_tests"] == ["src/x.test.ts > it > wobbles"]
    with session_scope(db) as s:
        assert s.scalars(select(Event).where(Event.kind == "gate.flaky")).one().task_id == ids[0]


def test_flaky_observations_quarantine_the_test_and_its_file_leaves_the_gates_commands(gate_hub, db, coin):
    hub, root, run_id, configure = gate_hub
    flaky_once_per_tree = coin.command("git rev-parse HEAD^{tree}")
    excluded = 'test "x{quarantined}" = "x--exclude=src/x.test.ts"'
    settings = configure([flaky_once_per_tree], FLAKY_QUARANTINE_AFTER="2")
    first = complete(db, hub, root, run_id, "fl1", {"fl1.txt": "1\n"})
    assert merge_task(first, settings) == "merged"
    with session_scope(db) as s:
        row = s.scalars(select(FlakyTest)).one()
        assert (row.status, row.observations, row.last_source, row.fix_task_id) == ("observed", 1, "gate", None)
    second = complete(db, hub, root, run_id, "fl2", {"fl2.txt": "2\n"})
    assert merge_task(second, settings) == "merged"
    with session_scope(db) as s:
        row = s.scalars(select(FlakyTest)).one()
        assert row.status == "quarantined" and row.observations == 2 and row.fix_task_id
        fix = s.get(Task, row.fix_task_id)
        assert fix.kind == "fix" and fix.scope == ["src/x.test.ts"] and "wobbles" in fix.title
    # From now on the gate's commands leave the quarantined file out.
    settings = configure([excluded])
    third = complete(db, hub, root, run_id, "fl3", {"fl3.txt": "3\n"})
    assert merge_task(third, settings) == "merged"
    with session_scope(db) as s:  # one fix task, however often it is seen again
        assert len(s.scalars(select(Task).where(Task.kind == "fix")).all()) == 1


def test_a_gate_that_cannot_run_holds_the_batch_and_main_stays(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure(["no-such-tool-anywhere --check"])
    ids = [complete(db, hub, root, run_id, "h", {"h.txt": "h\n"})]
    before = git(hub, "rev-parse", "main")
    assert merge_task(ids[0], settings) == "held"
    (row,) = attempts(db)
    assert row.status == "failed" and "command not found" in row.error
    assert git(hub, "rev-parse", "main") == before
    with session_scope(db) as s:
        assert s.get(Task, ids[0]).status == "complete"  # not the branch's fault: it waits for a retry


def test_a_culprit_out_of_attempts_is_blocked_and_a_person_is_asked(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_BROKEN])
    ids = [complete(db, hub, root, run_id, "z", {"BROKEN-z": "z\n"}, max_attempts=1)]
    assert merge_task(ids[0], settings) == "rejected"
    with session_scope(db) as s:
        assert s.get(Task, ids[0]).status == "blocked"
        assert s.scalars(select(Event).where(Event.kind == "gate.needs_person")).one().task_id == ids[0]


def test_gate_each_tests_every_branch_on_its_own(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_BROKEN], GATE="each")
    ids = [complete(db, hub, root, run_id, f"e{i}", {f"e{i}.txt": "e\n"}) for i in range(2)]
    assert merge_task(ids[0], settings) == "merged"  # the line takes the rest of the pool too, one at a time
    assert [r.task_id for r in attempts(db)] == ids
    assert merge_task(ids[1], settings) == "already:merged"
    assert len({r.batch_id for r in attempts(db)}) == 2
    with session_scope(db) as s:
        sizes = [len(r.spec["entries"]) for r in s.scalars(select(GateRunRow).where(GateRunRow.lane.is_not(None)))]
    assert sizes == [1, 1]


def test_a_branch_already_on_main_is_recorded_merged_without_testing(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_BROKEN])
    tid = complete(db, hub, root, run_id, "again", {"g.txt": "g\n"})
    with session_scope(db) as s:
        sha = s.scalars(select(Task).where(Task.id == tid)).one().branch
    git(hub, "update-ref", "refs/heads/main", git(hub, "rev-parse", sha))  # as a landing before a crash left it
    assert merge_task(tid, settings) == "merged"
    assert gate_trees(db) == {}


ALWAYS_WOBBLES = "echo ' FAIL  src/x.test.ts > it > wobbles'; exit 1"


def test_a_test_already_recorded_flaky_is_quarantined_and_does_not_fail_later_batches(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure(["true", ALWAYS_WOBBLES])
    with session_scope(db) as s:
        s.add(FlakyTest(name="src/x.test.ts > it > wobbles", file="src/x.test.ts", status="quarantined",
                        observations=2))
    ids = [complete(db, hub, root, run_id, "q", {"q.txt": "q\n"})]
    assert merge_task(ids[0], settings) == "merged"
    with session_scope(db) as s:
        (run,) = [e.data for e in s.scalars(select(Event).where(Event.kind == "gate.run"))]
    assert run["result"] == "green" and run["quarantined"] == ["src/x.test.ts > it > wobbles"]
    # A failure in any other test still counts.
    settings = configure(["echo ' FAIL  src/y.test.ts > other'; exit 1"])
    other = complete(db, hub, root, run_id, "r", {"r.txt": "r\n"})
    assert merge_task(other, settings) == "rejected"


# -- how long a batch waits to fill -----------------------------------------------------------------------


def test_the_batch_wait_grows_with_cpu_pressure_from_the_idle_to_the_busy_wait(gate_hub):
    *_, configure = gate_hub
    s = configure(["true"], GATE_BATCH_WAIT_S="1")
    assert batch_mod.batch_wait_s(s, 0.0) == 1.0 and batch_mod.batch_wait_s(s, 1.0) == 10.0
    assert batch_mod.batch_wait_s(s, 0.5) == pytest.approx(5.5)
    s = configure(["true"], GATE_BATCH_WAIT_S="0")  # no wait set: none however busy
    assert batch_mod.batch_wait_s(s, 1.0) == 0.0
    s = configure(["true"], GATE_BATCH_WAIT_S="2", GATE_BATCH_WAIT_BUSY_S="4")
    assert batch_mod.batch_wait_s(s, 0.5) == pytest.approx(3.0)
    assert 0.0 <= batch_mod.cpu_pressure() <= 1.0


def test_a_batch_waits_only_while_another_task_of_the_run_may_still_join(gate_hub, db, monkeypatch):
    hub, root, run_id, configure = gate_hub
    s = configure(["true"], GATE_BATCH_WAIT_S="60")
    monkeypatch.setattr(batch_mod, "cpu_pressure", lambda: 0.0)
    first = complete(db, hub, root, run_id, "alone", {"a.txt": "a\n"})
    with session_scope(db) as sess:  # nothing else under way: no wait at all
        started = time.monotonic()
        assert [t.id for t in batch_mod.gather(sess, sess.get(Task, first), s)] == [first]
        assert time.monotonic() - started < 5
        other = Task(run_id=run_id, description="other", branch="swarm/other", scope=["b.txt"], status="running",
                     title="other", attempts=1)
        sess.add(other)
    with session_scope(db) as sess:
        other_id = sess.scalars(select(Task.id).where(Task.branch == "swarm/other")).one()
    head = branch(hub, "swarm/other", root, {"b.txt": "b\n"})[-1]

    def finish_other() -> None:  # completes a moment later, while the batch waits for it
        time.sleep(1.5)
        with session_scope(db) as sess:
            _hand_off(sess, other_id, head)
            assert transition(sess, other_id, "running", "complete")

    threading.Thread(target=finish_other, daemon=True).start()
    with session_scope(db) as sess:
        started = time.monotonic()
        found = [t.id for t in batch_mod.gather(sess, sess.get(Task, first), s)]
        waited = time.monotonic() - started
    assert found == [first, other_id]  # it joined, and nothing else could: done well before the 60 s wait
    assert 1.0 <= waited < 20, waited


def test_under_cpu_pressure_a_batch_waits_longer_only_while_it_is_under_half_full(gate_hub, db, monkeypatch):
    hub, root, run_id, configure = gate_hub
    s = configure(["true"], GATE_BATCH_WAIT_S="0.5", GATE_BATCH_WAIT_BUSY_S="3", GATE_BATCH_MAX="4")
    monkeypatch.setattr(batch_mod, "cpu_pressure", lambda: 1.0)
    first = complete(db, hub, root, run_id, "p1", {"p1.txt": "1\n"})
    with session_scope(db) as sess:  # a task still running, which never completes here
        sess.add(Task(run_id=run_id, description="slow", branch="swarm/slow", scope=["s.txt"], status="running",
                      title="slow", attempts=1))

    def timed() -> tuple[int, float]:
        with session_scope(db) as sess:
            started = time.monotonic()
            n = len(batch_mod.gather(sess, sess.get(Task, first), s))
            return n, time.monotonic() - started

    n, waited = timed()  # one of four: under half, so the busy wait
    assert n == 1 and 2.9 <= waited < 8, waited
    complete(db, hub, root, run_id, "p2", {"p2.txt": "2\n"})
    n, waited = timed()  # two of four: half full, so only the idle wait
    assert n == 2 and 0.4 <= waited < 2.5, waited


def test_a_branch_whose_merge_keeps_failing_is_not_taken_into_every_batch(gate_hub, db):
    """A head the hub does not hold (say the hub was made anew) fails each time: after MAX_MERGE_FAILURES the
    monitor gives it up, and the batches of the tasks landing after it must leave it out too."""
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_BROKEN])
    with session_scope(db) as s:
        lost = _complete_task(s, run_id, "swarm/lost", ["lost.txt"], "f" * 40)
    for _ in range(MAX_MERGE_FAILURES):
        assert merge_task(lost, settings) == "failed"
    assert [r.status for r in attempts(db)] == ["failed"] * MAX_MERGE_FAILURES
    ok = complete(db, hub, root, run_id, "ok", {"ok.txt": "ok\n"})
    assert merge_task(ok, settings) == "merged"
    rows = attempts(db)
    assert [(r.task_id, r.status) for r in rows[MAX_MERGE_FAILURES:]] == [(ok, "merged")]
    assert git(hub, "show", "main:ok.txt") == "ok"


def test_each_gate_run_is_a_sandbox_of_its_own_and_leftovers_of_dead_processes_are_swept(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure(["test ! -e ../left && touch ../left $HOME/left $TMPDIR/left && echo $HOME"])
    backend = check_backend_for(settings)
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    for name in (f"{dead}-abc-1", "workspace", f"{os.getpid()}-abc-2", "deps-abc"):
        backend.create(run_id=GATE_RUN, task_id=name, attempt=1, env={})
    head = branch(hub, "swarm/s", root, {"s.txt": "s\n"})[-1]
    first, second = run_gate(settings, head, root), run_gate(settings, head, root)
    assert first.passed and second.passed  # the second run saw nothing of the first's
    assert sorted(i.task_id for i in backend.list(GATE_RUN)) == sorted([f"{os.getpid()}-abc-2", "deps-abc"])
