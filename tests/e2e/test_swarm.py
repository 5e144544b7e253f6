"""End to end: from plan to merged on the real stack.

Beat is played by the test (it calls the ticks as beat would); the work and merge stages run in
real Celery workers (threads pool for work, one merge worker), sandboxes are local, the model
is the fake OpenAI-compatible server speaking HTTP on loopback.
"""

from __future__ import annotations

import subprocess

from sqlalchemy import func, select

from agentswarm.db import Event, Feature, HandoffRecord, LLMCall, MergeAttempt, Run, Task, session_scope
from agentswarm.git.hub import foreign_hooks
from agentswarm.monitor.tick import monitor_tick
from agentswarm.planning.planner import plan_tick
from agentswarm.reconcile.tick import reconcile_tick
from agentswarm.sandbox import procs
from tests.support.waiting import wait_for


def _features_done(db_url) -> bool:
    with session_scope(db_url) as s:
        return s.scalar(select(func.count()).where(Feature.status != "done")) == 0


def _leftover_processes(root) -> list[int]:
    return [pid for pids in procs.marked_processes(str(root / "sandboxes")).values() for pid in pids]


def _plant_hooks(hub, log) -> None:
    """Hooks an agent could plant in the hub: each appends the environment it was run with to `log`."""
    for name in ("reference-transaction", "post-update", "pre-auto-gc"):
        hook = hub / "hooks" / name
        hook.write_text(f"#!/bin/sh\necho \"== {name}\" >> {log}\nenv >> {log}\ncat >/dev/null\nexit 0\n")
        hook.chmod(0o755)


def test_features_go_from_plan_to_merged(swarm, db, celery_worker):
    hook_log = swarm.root / "hooks.log"
    _plant_hooks(swarm.hub, hook_log)
    celery_worker(queues="work", pool="threads", concurrency=4, env=swarm.env)
    celery_worker(queues="merge", pool="solo", env=swarm.env)

    def beat():
        plan_tick()
        monitor_tick()

    wait_for(lambda: _features_done(db), timeout=150, every=1.0, tick=beat)
    plan_tick()  # every feature is done, but main is not checked yet: the run waits for the reconciler
    with session_scope(db) as s:
        assert s.get(Run, swarm.run_id).status == "active"
    assert reconcile_tick()["green"] is True  # the reconcile worker's job, here in this process
    plan_tick()  # the planner sees main green and ends the run
    with session_scope(db) as s:
        run = s.get(Run, swarm.run_id)
        assert run.status == "finished", run.stop_reason
        tasks = s.scalars(select(Task).where(Task.run_id == swarm.run_id)).all()
        assert tasks and all(t.status == "complete" for t in tasks)
        assert sorted(f for t in tasks for f in t.feature_ids) == ["core-001", "core-002", "ui-001", "ui-002"]
        merged = s.scalars(select(MergeAttempt).where(MergeAttempt.status == "merged")).all()
        assert {m.task_id for m in merged} == {t.id for t in tasks}
        handoffs = s.scalars(select(HandoffRecord)).all()
        detail = [(h.task_id, h.attempt, h.status, h.error) for h in handoffs]
        assert len(handoffs) == len(tasks) and all(h.commits and h.files_changed for h in handoffs), detail
        roles = dict(s.execute(select(LLMCall.role, func.count()).group_by(LLMCall.role)).all())
        assert roles.get("planner", 0) >= 3 and roles.get("worker", 0) >= 2 * len(tasks)
        # Dependencies were respected: core-002 was planned only after core-001 landed.
        by_feature = {t.feature_ids[0]: t for t in tasks}
        first_merge = {m.task_id: m.finished_at for m in merged}
        assert by_feature["core-002"].created_at > first_merge[by_feature["core-001"].id]
        events = [e.kind for e in s.scalars(select(Event))]
    main = swarm.git("rev-parse", "main")
    files = swarm.git("ls-tree", "-r", "--name-only", main).splitlines()
    for path in ("src/core/vec.ts", "src/core/vecmath.ts", "src/ui/hud.ts", "src/ui/coords.ts"):
        assert path in files
    assert "merge.merged" in events and "run.ended" in events
    # Every main value ever recorded is an ancestor of the final main: it only moved forward.
    for m in merged:
        subprocess.run(["git", f"--git-dir={swarm.hub}", "merge-base", "--is-ancestor", m.main_after, main],
                       check=True)
    assert swarm.sandbox_dirs() == []
    assert _leftover_processes(swarm.root) == []
    # The planted hooks ran at most for agents' pushes (with the agents' environment) until the
    # monitor removed them; no orchestrator process ran one: DATABASE_URL and secrets never show.
    ran = hook_log.read_text() if hook_log.exists() else ""
    for secret in ("DATABASE_URL", "REDIS_URL", "aws-orchestrator-secret"):
        assert secret not in ran, f"{secret} reached a hook planted in the hub"
    assert "hub.hooks_removed" in events and foreign_hooks(swarm.hub) == []


def test_reconciler_sees_green_main(swarm, db):
    assert reconcile_tick()["green"] is True
