"""End to end: the gated merge queue on the real stack, on VoxelCraft's own toolchain.

Real Celery workers (threads pool for work, one merge worker), Postgres, Redis, the git hub, local
sandboxes (bubblewrap when available), `npm ci` into the shared dependency cache once per session,
`tsc` and vitest run by presubmit in the agents' sandboxes and by the gate in a fresh sandbox per run. The
model is the simulator over HTTP, told to break branches the way models do (SIM_FAULTS).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from sqlalchemy import select

from agentswarm.config import get_settings
from agentswarm.db import Event, HandoffRecord, MergeAttempt, Task, session_scope
from tests.e2e.voxelcraft import (
    all_done,
    assert_main_only_on_tested_trees,
    beat,
    feature,
    git,
    start_workers,
    tsc_passes_on_main,
)
from tests.merge.coin import Coin, toss_command
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="the gate's tests need node and npm (nodejs, npm)")

def test_presubmit_shows_the_agent_its_type_error_and_it_fixes_it_within_the_attempt(gated, db, celery_worker,
                                                                                     tmp_path, shared_deps):
    env, hub, _ = gated([feature("g-001", "alpha"), feature("g-002", "beta")], faults="type:1.0")
    start_workers(celery_worker, env)
    wait_for(lambda: all_done(db), timeout=240, every=1.0, tick=beat)
    with session_scope(db) as s:
        tasks = s.scalars(select(Task)).all()
        assert tasks and all(t.attempts == 1 for t in tasks), [(t.id, t.attempts) for t in tasks]
        for h in s.scalars(select(HandoffRecord)):
            runs = [(r["ok"], r["unavailable"]) for r in h.presubmit]
            assert runs[0] == (False, False) and runs[-1] == (True, False), runs
            assert "TS2322" in h.presubmit[0]["output"]
            message = git(hub, "log", "-1", "--format=%B", h.head_sha)
            assert "Sim-Fixed: type" in message and "Sim-Fault:" not in message
        assert not s.scalars(select(MergeAttempt).where(MergeAttempt.status == "rejected")).all()
    assert_main_only_on_tested_trees(db, hub)
    check = tsc_passes_on_main(hub, tmp_path, shared_deps)
    assert check.returncode == 0, check.stdout[-2000:]
    # The type checks above (presubmit's and the gate's) ran the tsc started from a snapshot (TSC_SNAPSHOT
    # is on by default): it was built for this lock file, and found the TS2322 the plain tsc finds.
    assert list(shared_deps.glob("*/tsc-*.blob")) and list(shared_deps.glob("*/node_modules-tsc-*/.bin/tsc"))
    assert not list(shared_deps.glob("*/tsc-*.failed"))


def test_without_presubmit_the_queue_sends_a_type_error_back_to_its_author_who_lands_it_next(
        gated, db, celery_worker, tmp_path, shared_deps):
    env, hub, llm = gated([feature("g-001", "alpha")], faults="type:1.0", fault_attempts=1,
                        GATE_PRESUBMIT="off", SIM_FAULTS="type:1.0", SIM_FAULT_ATTEMPTS="1")
    start_workers(celery_worker, env)
    wait_for(lambda: all_done(db), timeout=240, every=1.0, tick=beat)
    with session_scope(db) as s:
        (task,) = s.scalars(select(Task)).all()
        assert task.attempts == 2 and task.status == "complete"
        attempts = s.scalars(select(MergeAttempt).order_by(MergeAttempt.id)).all()
        assert [a.status for a in attempts] == ["rejected", "merged"]
        rejected = attempts[0]
        assert "TS2322" in rejected.gate["output"] and rejected.tree_sha and rejected.batch_id
        assert "TS2322" in task.context["gate"]["output"] and task.context["gate"]["source"] == "merge-queue"
        assert "Sim-Fault: type" in git(hub, "log", "-1", "--format=%B", rejected.head_sha)
        assert "Sim-Fault" not in git(hub, "log", "-1", "--format=%B", attempts[1].head_sha)
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
        assert "gate.culprit" in kinds and kinds.index("gate.culprit") < kinds.index("merge.merged")
        # The second attempt's worker prompt carried the gate's output.
        prompts = [m["content"] for r in llm.requests if "AgentSwarm worker" in str(r["messages"][0].get("content"))
                   for m in r["messages"] if m.get("role") == "user"]
        assert any("TS2322" in p for p in prompts)
    assert_main_only_on_tested_trees(db, hub)
    assert tsc_passes_on_main(hub, tmp_path, shared_deps).returncode == 0


def test_a_semantic_pair_lands_the_first_and_blames_the_later_naming_the_first(gated, db, celery_worker):
    env, hub, _ = gated([feature("g-001", "alpha"), feature("g-002", "beta")], faults="semantic:1.0",
                        fault_attempts=1, GATE_PRESUBMIT="off", GATE_BATCH_WAIT_S="30", GATE_BATCH_MAX="2")
    start_workers(celery_worker, env)
    wait_for(lambda: all_done(db), timeout=240, every=1.0, tick=beat)
    with session_scope(db) as s:
        rejected = s.scalars(select(MergeAttempt).where(MergeAttempt.status == "rejected")).all()
        assert len(rejected) == 1, [(a.task_id, a.status) for a in s.scalars(select(MergeAttempt))]
        culprit = rejected[0]
        # The pair was stacked in one batch, the culprit after its partner; the partner lands (in that batch with
        # the serial gate, in its next one when the red batch was bisected aside) and is named as the clash.
        first = s.scalars(select(MergeAttempt).where(MergeAttempt.task_id != culprit.task_id,
                                                     MergeAttempt.status == "merged")).one()
        assert culprit.position > 0 and culprit.gate["tested_with"] == [s.get(Task, first.task_id).branch]
        assert culprit.gate["clashes_with"]["task_id"] == first.task_id
        assert "TS2717" in culprit.gate["output"]
        task = s.get(Task, culprit.task_id)
        assert task.context["gate"]["clashes_with"]["task_id"] == first.task_id and task.attempts == 2
    assert_main_only_on_tested_trees(db, hub)


FLAKY = "echo ' FAIL  src/gate/alpha.test.ts > The alpha module > sometimes fails'"


def test_a_red_that_does_not_reproduce_is_recorded_flaky_and_does_not_block(gated, db, celery_worker, tmp_path):
    flaky = toss_command(tmp_path / "hub.git", fail=FLAKY)  # red the first time, green after (a fresh sandbox each)
    # The serial gate lands the branch itself once its red does not reproduce (a speculative one, bisecting aside,
    # records the flaky test and sends the branch back to the pool to land in its next batch).
    env, hub, _ = gated([feature("g-001", "alpha")], GATE_PRESUBMIT="off", GATE_PARALLEL="1",
                        GATE_COMMANDS=json.dumps(["node_modules/.bin/tsc --noEmit", flaky]))
    coin = Coin(hub)
    try:
        start_workers(celery_worker, env)
        wait_for(lambda: all_done(db), timeout=240, every=1.0, tick=beat)
    finally:
        coin.close()
    with session_scope(db) as s:
        (attempt,) = s.scalars(select(MergeAttempt)).all()
        assert attempt.status == "merged" and attempt.gate["flaky"] is True
        assert attempt.gate["flaky_tests"] == ["src/gate/alpha.test.ts > The alpha module > sometimes fails"]
        flaky = s.scalars(select(Event).where(Event.kind == "gate.flaky")).one()
        assert "sometimes fails" in flaky.message
        assert s.scalars(select(Task)).one().attempts == 1
    assert_main_only_on_tested_trees(db, hub)


def test_a_merge_worker_killed_mid_gate_never_moves_main_to_an_untested_tree(gated, db, celery_worker):
    env, hub, _ = gated([feature("g-001", "alpha"), feature("g-002", "beta")], GATE_PRESUBMIT="off",
                        GATE_BATCH_WAIT_S="20", GATE_BATCH_MAX="2",
                        GATE_COMMANDS=json.dumps(["node_modules/.bin/tsc --noEmit", "sleep 30"]))
    celery_worker(queues="work", pool="threads", concurrency=3, env=env)
    merger = celery_worker(queues="merge", pool="solo", env=env)
    before = git(hub, "rev-parse", "main")

    def testing() -> bool:
        with session_scope(db) as s:
            return s.scalar(select(Event.id).where(Event.kind == "gate.testing").limit(1)) is not None

    wait_for(testing, timeout=180, every=0.5, tick=beat)
    merger.kill(9)  # the whole group: the worker and the gate's sandbox under it
    assert git(hub, "rev-parse", "main") == before
    with session_scope(db) as s:
        assert not s.scalars(select(MergeAttempt)).all()  # the batch's transaction died with it
    env2 = {**env, "GATE_COMMANDS": json.dumps(["node_modules/.bin/tsc --noEmit"])}
    os.environ["GATE_COMMANDS"] = env2["GATE_COMMANDS"]
    get_settings.cache_clear()
    celery_worker(queues="merge", pool="solo", env=env2)
    wait_for(lambda: all_done(db), timeout=240, every=1.0, tick=beat)
    assert git(hub, "rev-parse", "main") != before
    assert_main_only_on_tested_trees(db, hub)
    with session_scope(db) as s:
        assert {a.status for a in s.scalars(select(MergeAttempt))} == {"merged"}
