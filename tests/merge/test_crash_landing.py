"""Crash-consistent landings: Postgres lost at each step of the merge stage (before the compare-and-swap, between it
and the commit of its record, before the branch is deleted), gated and ungated; the retry, or the monitor, settles
what was left from git, and every task is recorded merged exactly once with its feature done.

The crash is a real OperationalError raised at the stage's chaos points (`agentswarm.chaos.strike`), in
process, over a real hub and real Postgres; tests/e2e/test_restarts.py restarts a real Postgres at the same points.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from agentswarm.config import get_settings
from agentswarm.db import Event, Feature, MergeAttempt, Run, Task, session_scope
from agentswarm.git.landing import MergeStrategy, land_branch
from agentswarm.merge.queue import merge_task
from agentswarm.monitor.tick import settle_landings_now
from tests.git.hubkit import branch, git, new_hub, read
from tests.merge.test_merge_queue import _complete_task


class Crash:
    """Raise a lost-connection error the first time the stage reaches `point`."""

    def __init__(self, point: str) -> None:
        self.point, self.hit = point, False

    def __call__(self, point: str) -> bool:
        if point == self.point and not self.hit:
            self.hit = True
            raise OperationalError("COMMIT", {}, Exception(f"terminating connection (chaos at {point})"))
        return False


@pytest.fixture
def hub_run(tmp_path, monkeypatch, db):
    hub, root = new_hub(tmp_path / "hub.git", {"README.md": "seed\n", "src/a.ts": "a\n"})

    def configure(**env: str):
        base = {"HUB_PATH": str(hub), "SANDBOX_ROOT": str(tmp_path / "sandboxes"), "MERGE_DELETE_BRANCH": "true",
                "GATE_INSTALL": "", "GATE_FULL_COMMANDS": "[]", "GATE_BATCH_WAIT_S": "0", "GATE_FULL_EVERY": "0",
                "GATE_COMMANDS": '["test -e README.md"]', **env}
        for k, v in base.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()

    with session_scope(db) as s:
        run = Run(max_tasks=100, max_tokens=10**9, max_dollars=10.0)
        s.add(run)
        s.add(Feature(id="f-1", category="core", title="one", files=["src/one.ts"]))
        s.flush()
        run_id = run.id
    monkeypatch.setattr("agentswarm.queue.send.send_run_task", lambda *a: None)
    monkeypatch.setattr("agentswarm.queue.send.send_merge", lambda *a: None)
    yield hub, root, run_id, configure
    get_settings.cache_clear()


def _task(db, hub, root, run_id: str, name: str = "one") -> tuple[str, str]:
    head = branch(hub, f"swarm/{name}", root, {f"src/{name}.ts": f"{name}\n"})[-1]
    with session_scope(db) as s:
        return _complete_task(s, run_id, f"swarm/{name}", [f"src/{name}.ts"], head, feature_ids=["f-1"]), head


def _rows(db, task_id: str) -> list[str]:
    with session_scope(db) as s:
        return [m.status for m in s.scalars(select(MergeAttempt).where(MergeAttempt.task_id == task_id)
                                            .order_by(MergeAttempt.id))]


def _branches(hub) -> list[str]:
    return git(hub, "for-each-ref", "--format=%(refname:short)", "refs/heads/swarm/").split()


def _feature(db) -> str:
    with session_scope(db) as s:
        return s.get(Feature, "f-1").status


@pytest.mark.parametrize("gate", ["off", "batch"])
@pytest.mark.parametrize(("point", "rows"), [
    ("merge.before_cas", ["abandoned", "merged"]),  # main never moved: the landing is made again
    ("merge.after_cas", ["merged"]),  # main moved, its record was lost: the landing row is recorded merged
    ("merge.before_delete", ["merged"]),  # recorded; the branch goes on the retry
])
def test_postgres_lost_at_each_step_of_a_landing_lands_it_once(db, hub_run, monkeypatch, gate, point, rows):
    hub, root, run_id, configure = hub_run
    configure(GATE=gate, MERGE_STRATEGY="rebase")
    task_id, _ = _task(db, hub, root, run_id)
    main_before = git(hub, "rev-parse", "main")
    crash = Crash(point)
    module = "agentswarm.merge.queue.strike"
    monkeypatch.setattr(module, crash)
    monkeypatch.setattr("agentswarm.merge.batch.strike", crash)
    with pytest.raises(OperationalError):
        merge_task(task_id)
    assert crash.hit
    moved = git(hub, "rev-parse", "main") != main_before
    assert moved is (point != "merge.before_cas")
    again = merge_task(task_id)  # Celery's retry of the same message
    assert again in ("merged", "already:merged")
    assert _rows(db, task_id) == rows
    assert read(hub, "main", "src/one.ts") == "one\n" and _branches(hub) == [] and _feature(db) == "done"
    assert git(hub, "rev-list", "--count", f"{main_before}..main") == "1"  # landed once
    with session_scope(db) as s:
        merged_events = s.scalars(select(Event).where(Event.kind == "merge.merged", Event.task_id == task_id)).all()
    assert len(merged_events) == 1
    assert merge_task(task_id) == "already:merged" and _rows(db, task_id) == rows  # and stays so


def test_the_monitor_settles_a_landing_left_by_a_dead_merge_stage(db, hub_run):
    """A merge worker killed between the compare-and-swap and its commit leaves only the landing row."""
    from agentswarm.merge.records import record_intent

    hub, root, run_id, configure = hub_run
    configure(GATE="off")
    task_id, head = _task(db, hub, root, run_id)
    lost_id, lost_head = _task(db, hub, root, run_id, "two")
    main = git(hub, "rev-parse", "main")
    with session_scope(db) as s:  # what the dead stage committed before main moved
        record_intent(s, s.get(Task, task_id), strategy="fast-forward", main_before=main, main_after=head,
                      head=head, landed=[head])
        record_intent(s, s.get(Task, lost_id), strategy="fast-forward", main_before=main, main_after=lost_head,
                      head=lost_head, landed=[lost_head])
    git(hub, "update-ref", "refs/heads/main", head, main)  # its compare-and-swap, then the worker died
    settled = settle_landings_now(get_settings())
    assert settled == {"merged": [task_id], "abandoned": [lost_id]}
    assert _rows(db, task_id) == ["merged"] and _rows(db, lost_id) == ["abandoned"] and _feature(db) == "done"
    assert _branches(hub) == ["swarm/two"]  # the landed branch went once recorded; the other waits to land
    with session_scope(db) as s:
        kinds = s.scalars(select(Event.kind).where(Event.task_id.in_([task_id, lost_id])).order_by(Event.id)).all()
    assert kinds == ["merge.merged", "merge.interrupted"]
    assert settle_landings_now(get_settings()) == {"merged": [], "abandoned": []}
    assert merge_task(lost_id) == "merged" and _rows(db, lost_id) == ["abandoned", "merged"]


def test_landed_commits_carry_the_task_trailer(tmp_path):
    hub, root = new_hub(tmp_path / "hub.git", {"a": "a\n"})
    git(hub, "update-ref", "refs/heads/main", branch(hub, "other", root, {"b": "b\n"})[-1])  # main moved on
    branch(hub, "swarm/t1", root, {"c": "c\n"}, {"d": "d\n"})
    result = land_branch(hub, "swarm/t1", MergeStrategy.REBASE)
    assert result.status == "merged" and len(result.commits_landed) == 2
    for sha in result.commits_landed:
        assert "Swarm-Task: t1" in git(hub, "log", "-1", "--format=%(trailers:key=Swarm-Task)", sha)
    branch(hub, "swarm/t2", git(hub, "rev-parse", "main"), {"e": "e\n"})
    merge = land_branch(hub, "swarm/t2", MergeStrategy.MERGE_COMMIT)
    assert git(hub, "log", "-1", "--format=%(trailers:key=Swarm-Task,valueonly)", merge.main_after) == "t2"
