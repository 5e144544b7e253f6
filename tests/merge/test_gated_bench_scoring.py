"""bench/gated_swarm.py scores the gate against the truth in the commits, not against what the swarm believes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentswarm.db import Event, HandoffRecord, MergeAttempt, Run, Task, session_scope
from bench.gated_swarm import Git, _score
from tests.git.hubkit import branch, new_hub


def test_recall_culprits_and_misses_come_from_the_trailers(tmp_path, db):
    hub, root = new_hub(tmp_path / "hub.git", {"README.md": "seed\n"})
    now = datetime.now(UTC)

    def head(name: str, trailer: str | None) -> str:
        message = f"feature: {name}\n\nTask: {name}" + (f"\n\n{trailer}" if trailer else "")
        return branch(hub, f"swarm/{name}", root, {f"{name}.txt": name}, message=message)[-1]

    cases = {  # name: (trailer on its head, what happened to it)
        "clean": (None, "merged"),
        "fixed": ("Sim-Fixed: type", "merged"),  # presubmit made it fix the break within the attempt
        "typed": ("Sim-Fault: type", "rejected"),  # a true culprit
        "innocent": (None, "rejected"),  # a false culprit
        "sem1": ("Sim-Fault: semantic\nSim-Pair: p1", "merged"),  # the first half of a pair breaks nothing
        "sem2": ("Sim-Fault: semantic\nSim-Pair: p1", "merged"),  # the second one of that pair landing is a miss
        "sem3": ("Sim-Fault: semantic\nSim-Pair: p2", "merged"),  # alone in its pair: breaks nothing
        "tested": ("Sim-Fault: test", "merged"),  # a miss
    }
    with session_scope(db) as s:
        run = Run(max_tasks=10, max_tokens=10, max_dollars=1.0)
        s.add(run)
        s.flush()
        for i, (name, (trailer, fate)) in enumerate(cases.items()):
            sha = head(name, trailer)
            t = Task(id=name, run_id=run.id, description=name, branch=f"swarm/{name}", status="complete")
            s.add(t)
            s.flush()
            presubmit = [{"ok": False, "unavailable": False}, {"ok": True}] if name == "fixed" else []
            s.add(HandoffRecord(task_id=name, attempt=1, status="complete", head_sha=sha, commits=[sha],
                                presubmit=presubmit, created_at=now + timedelta(seconds=i)))
            s.add(MergeAttempt(task_id=name, branch=t.branch, strategy="fast-forward", status=fate, head_sha=sha,
                               main_after="m" * 40 if fate == "merged" else None,
                               finished_at=now + timedelta(seconds=10 + i), batch_id="b1"))
        s.add(Event(run_id=run.id, kind="gate.batch", data={"red": True, "runs": 4}))
        s.add(Event(run_id=run.id, kind="gate.run", data={"seconds": 2.5}))
    score = _score(db, Git(hub), 60.0)
    assert score["landed"] == 6 and score["culprits"] == {"true": 1, "false": 1, "flaky_test": 0}
    assert score["caught_by_presubmit"]["type"] == 1 and score["caught_by_queue"]["type"] == 1
    assert score["missed"] == {"type": 0, "test": 1, "semantic": 1}
    assert score["recall"] == 0.5  # 2 caught (fixed, typed), 2 missed (tested, sem2)
    assert score["false_culprit_share"] == 0.5 and score["red_batches"] == 1 and score["bisection_runs"] == 3
    assert score["faults_injected"]["semantic"] == 3 and score["handoff_to_landed_p50_s"] == 10.0
