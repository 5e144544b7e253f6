"""End to end: main breaks anyway, and the reconciler finds the commit, reverts it, reopens its task.

The real stack on VoxelCraft's toolchain: Celery workers for work, merge and reconcile, Postgres,
Redis, the hub, sandboxes (bubblewrap), `npm ci` into the shared cache. The gate checks types only
(GATE_COMMANDS=tsc, presubmit off): a failing test is a fault it does not check. The reconciler's
slow checks (tsc, the whole vitest suite, vite build, the page in headless Chromium) see it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from agentswarm.db import Event, MergeAttempt, Run, Task, session_scope
from agentswarm.db.models import FlakyTest, MainCheck
from agentswarm.reconcile.health import health
from agentswarm.reconcile.page import latest_screenshots, screenshots_root
from tests.e2e.voxelcraft import GATE_INSTALL, beat, feature, git, start_workers
from tests.merge.coin import Coin, toss_command
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm (nodejs, npm)"),
              pytest.mark.bwrap]


def history(db) -> str:
    """Every main check, task and merge record of the run, one line each."""
    with session_scope(db) as s:
        lines = [f"check {c.sha[:10]} {c.result} action={c.action} culprit={c.culprit_task_id} "
                 f"bisect={c.bisect} tests={c.failing_tests[:3]}" for c in s.scalars(select(MainCheck)
                                                                                  .order_by(MainCheck.id))]
        lines += [f"task {t.id} {t.kind} {t.status} attempts={t.attempts} origin={t.origin_id}"
                  for t in s.scalars(select(Task).order_by(Task.created_at))]
        lines += [f"merge {m.task_id} {m.status} {(m.main_after or '')[:10]}"
                  for m in s.scalars(select(MergeAttempt).order_by(MergeAttempt.id))]
        lines += [f"event {e.kind} {e.message[:120]}" for e in s.scalars(select(Event).where(
            Event.kind.like("reconcile.%")).order_by(Event.id))]
    return "\n".join(lines)


def run_of(db) -> Run:
    with session_scope(db) as s:
        run = s.scalars(select(Run)).one()
        s.expunge(run)
        return run


def test_a_break_only_the_full_suite_sees_is_reverted_through_the_queue_and_its_task_reopened(
        gated, db, celery_worker, tmp_path):
    env, hub, llm = gated([feature("r-001", "alpha"), feature("r-002", "beta")], faults="test:1.0",
                          fault_attempts=1, GATE_PRESUBMIT="off", GATE_FULL_COMMANDS="[]",
                          GATE_COMMANDS=json.dumps(["node_modules/.bin/tsc --noEmit"]),
                          RECONCILE_INSTALL=GATE_INSTALL, RECONCILE_TIMEOUT_S="300")
    start_workers(celery_worker, env)
    celery_worker(queues="reconcile", pool="solo", env=env)
    start = git(hub, "rev-parse", "main")
    wait_for(lambda: run_of(db).status != "active", timeout=600, every=1.0, tick=beat)

    run = run_of(db)
    story = history(db)  # what happened, for any assertion below that fails
    assert run.status == "finished" and run.stop_reason == "every feature is done", story
    final = git(hub, "rev-parse", "main")
    with session_scope(db) as s:
        checks = s.scalars(select(MainCheck).order_by(MainCheck.id)).all()
        red = [c for c in checks if c.result == "red"]
        assert red and all(c.action == "revert" and c.culprit_task_id for c in red), story
        assert checks[-1].result == "green" and checks[-1].sha == final and checks[-1].screenshot, story
        reverts = s.scalars(select(Task).where(Task.kind == "revert")).all()
        culprits = {r.origin_id for r in reverts}
        assert len(reverts) == 2 and all(r.status == "complete" for r in reverts), story
        features = s.scalars(select(Task).where(Task.kind != "revert")).all()
        assert culprits == {t.id for t in features}  # the fault was in every first attempt
        for t in features:
            assert t.status == "complete" and t.attempts == 2, story
            assert t.context["gate"]["source"] == "reconciler"
            assert "counts the letters" in t.context["gate"]["output"]  # the failing test, shown to the author
            statuses = [a.status for a in s.scalars(select(MergeAttempt).where(MergeAttempt.task_id == t.id)
                                                    .order_by(MergeAttempt.id))]
            assert statuses == ["reverted", "merged"], story
        for c in red:  # main was never rewritten: every red sha is still in its history
            assert git(hub, "merge-base", "--is-ancestor", c.sha, final) == ""
        assert start in git(hub, "rev-list", final).split()
        figures = health(s, run.id)
    assert figures["reverts"] == {"made": 2, "landed": 2, "failed": 0}, story
    assert figures["time_to_green_s"]["spells"] >= 1 and figures["time_to_green_s"]["p50"] > 0, story
    assert figures["red_for_s"] is None and figures["culprits_by_kind"].get("test", 0) >= 2, (figures, story)
    assert [p.stem for p in latest_screenshots(screenshots_root(hub), 5)][0] == final
    # The reopened attempts' prompts carried the reconciler's output.
    prompts = [m["content"] for r in llm.requests if "AgentSwarm worker" in str(r["messages"][0].get("content"))
               for m in r["messages"] if m.get("role") == "user"]
    assert sum("counts the letters" in p for p in prompts) >= 2


def wobbly(hub: Path) -> str:
    """Fails once per tree tested (a coin outside the tree: each gate run is a fresh sandbox), unless its test
    file is quarantined (the gate's {quarantined} leaves it out)."""
    return ('case "x{quarantined}" in *src/gate/alpha.test.ts*) echo "alpha.test.ts left out"; exit 0;; esac; '
            + toss_command(hub, "git rev-parse HEAD^{tree}",
                           "echo ' FAIL  src/gate/alpha.test.ts > The alpha module > sometimes fails'"))


def test_a_flaky_test_is_quarantined_after_two_observations_left_out_by_the_gate_and_released_by_the_reconciler(
        gated, db, celery_worker, tmp_path, request):
    env, hub, _ = gated([feature("q-001", "alpha"), feature("q-002", "beta"), feature("q-003", "gamma")],
                        GATE="each", GATE_PRESUBMIT="off", GATE_FULL_COMMANDS="[]", MAX_WORKERS="1",
                        GATE_COMMANDS=json.dumps(["node_modules/.bin/tsc --noEmit", wobbly(tmp_path / "hub.git")]),
                        FLAKY_QUARANTINE_AFTER="2", FLAKY_RELEASE_AFTER="1", RECONCILE_INSTALL=GATE_INSTALL,
                        RECONCILE_TIMEOUT_S="300")
    request.addfinalizer(Coin(hub).close)
    start_workers(celery_worker, env)
    celery_worker(queues="reconcile", pool="solo", env=env)
    wait_for(lambda: run_of(db).status != "active", timeout=600, every=1.0, tick=beat)

    assert run_of(db).stop_reason == "every feature is done"
    with session_scope(db) as s:
        merged = s.scalars(select(MergeAttempt).where(MergeAttempt.status == "merged")
                           .order_by(MergeAttempt.id)).all()
        features = [m for m in merged if s.get(Task, m.task_id).kind == "feature"]
        assert [m.gate.get("flaky", False) for m in features] == [True, True, False]  # seen twice, then left out
        assert features[2].gate["runs"] == 1 and features[2].gate["result"] == "green"
        flaky = s.scalars(select(FlakyTest)).one()
        assert flaky.name == "src/gate/alpha.test.ts > The alpha module > sometimes fails"
        assert flaky.status == "released" and flaky.quarantined_at and flaky.released_at and flaky.fix_task_id
        assert s.get(Task, flaky.fix_task_id).kind == "fix"
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
        assert kinds.count("flaky.observed") == 2 and kinds.count("flaky.quarantined") == 1
        assert kinds.index("flaky.quarantined") < kinds.index("flaky.released")
