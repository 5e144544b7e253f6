"""The merge stage through real Celery workers, Redis, Postgres and a bare hub."""

from __future__ import annotations

import time

from sqlalchemy import select

from agentswarm.db import Event, HandoffRecord, MergeAttempt, Run, Task, session_scope
from agentswarm.db.states import transition
from agentswarm.git.landing import land_branch as plumbing_merge
from tests.git.hubkit import branch, git, lines, new_hub, read


def _complete_task(db, run_id: str, branch_name: str, scope: list[str], head: str, **kw) -> str:
    """A task that ran and handed off `head` (the commit its runner measured and pushed)."""
    t = Task(run_id=run_id, description=f"change {scope}", branch=branch_name, scope=scope, status="running",
             title=f"task {branch_name}", attempts=1, **kw)
    db.add(t)
    db.flush()
    _hand_off(db, t.id, head)
    assert transition(db, t.id, "running", "complete")
    return t.id


def _hand_off(db, task_id: str, head: str, attempt: int = 1) -> None:
    db.add(HandoffRecord(task_id=task_id, attempt=attempt, status="complete", commits=[head], head_sha=head))
    db.flush()


def _wait(predicate, timeout=120.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def _merged_count(db_url):
    with session_scope(db_url) as db:
        return len(db.scalars(select(MergeAttempt).where(MergeAttempt.status.in_(["merged", "conflict"]))).all())


def test_two_merge_workers_lose_nothing_and_main_only_moves_forward(db, tmp_path, celery_worker, monkeypatch):
    from agentswarm.queue.send import send_merge

    files = {f"src/f{i}.ts": lines(5, f"f{i}") for i in range(300)}
    hub, root = new_hub(tmp_path / "hub.git", files)
    env = {"HUB_PATH": str(hub), "MERGE_STRATEGY": "rebase", "MERGE_DELETE_BRANCH": "false"}
    with session_scope(db) as s:
        run = Run(max_tasks=1000, max_tokens=10**9, max_dollars=100.0)
        s.add(run)
        s.flush()
        ids = []
        for i in range(240):
            name = f"swarm/b{i}"
            head = branch(hub, name, root, {f"src/f{i}.ts": lines(5, f"changed{i}")})[-1]
            ids.append(_complete_task(s, run.id, name, [f"src/f{i}.ts"], head))
    for _ in range(2):  # two workers on purpose, each concurrency 1, same hub
        celery_worker(queues="merge", pool="prefork", concurrency=1, env=env)
    for tid in ids + ids[:40]:  # some sent twice: a duplicate is a no-op
        send_merge(tid)
    assert _wait(lambda: _merged_count(db) >= len(ids)), f"only {_merged_count(db)} merged"
    time.sleep(1.0)  # let duplicates drain
    with session_scope(db) as s:
        attempts = s.scalars(select(MergeAttempt)).all()
    merged = [a for a in attempts if a.status == "merged"]
    assert sorted(a.task_id for a in merged) == sorted(ids), "each task lands exactly once"
    main = git(hub, "rev-parse", "main")
    for i in range(240):
        assert read(hub, main, f"src/f{i}.ts") == lines(5, f"changed{i}")
    assert git(hub, "rev-list", "--merges", "main") == ""  # rebase keeps main linear
    # main only moved forward: every value it took is an ancestor of the final main.
    for a in merged:
        assert git(hub, "merge-base", "--is-ancestor", a.main_before, main) == ""
        assert git(hub, "merge-base", "--is-ancestor", a.main_after, main) == ""
    chain = git(hub, "rev-list", "--first-parent", "--count", "main")
    assert int(chain) == 1 + 240


def test_conflict_records_files_and_creates_one_conflict_task_that_lands(db, tmp_path, monkeypatch):
    from agentswarm.config import get_settings
    from agentswarm.merge.queue import merge_task

    hub, root = new_hub(tmp_path / "hub.git", {"src/a.ts": lines(3), "src/b.ts": lines(3)})
    monkeypatch.setenv("HUB_PATH", str(hub))
    monkeypatch.setenv("MERGE_STRATEGY", "fast-forward")
    get_settings.cache_clear()
    sent = []
    monkeypatch.setattr("agentswarm.queue.send.send_run_task", lambda tid, p: sent.append((tid, p)))
    try:
        head_one = branch(hub, "swarm/one", root, {"src/a.ts": "one\n"})[-1]
        head_two = branch(hub, "swarm/two", root, {"src/a.ts": "two\n"})[-1]
        with session_scope(db) as s:
            run = Run(max_tasks=10, max_tokens=10**6, max_dollars=1.0)
            s.add(run)
            s.flush()
            one = _complete_task(s, run.id, "swarm/one", ["src/a.ts"], head_one, feature_ids=[])
            two = _complete_task(s, run.id, "swarm/two", ["src/a.ts"], head_two, feature_ids=[])
        assert merge_task(one) == "merged"
        assert merge_task(two) == "conflict"
        assert merge_task(two).startswith("already")  # handled once
        with session_scope(db) as s:
            attempt = s.scalars(select(MergeAttempt).where(MergeAttempt.task_id == two)).one()
            assert attempt.status == "conflict" and attempt.conflict_files == ["src/a.ts"]
            conflict_tasks = s.scalars(select(Task).where(Task.kind == "conflict")).all()
            assert len(conflict_tasks) == 1
            ct = conflict_tasks[0]
            assert ct.origin_id == two and ct.priority == 1 and "src/a.ts" in ct.scope
            assert ct.context["conflict"]["files"] == ["src/a.ts"]
            assert sent == [(ct.id, 1)]  # dispatched after commit, most urgent
            # The conflict task's agent resolves on top of the new main (done by hand here).
            main = git(hub, "rev-parse", "main")
            resolved = branch(hub, ct.branch, main, {"src/a.ts": "one\ntwo\n"})[-1]
            assert transition(s, ct.id, "pending", "assigned") and transition(s, ct.id, "assigned", "running")
            _hand_off(s, ct.id, resolved)
            assert transition(s, ct.id, "running", "complete")
            ct_id = ct.id
        assert merge_task(ct_id) == "merged"
        assert read(hub, "main", "src/a.ts") == "one\ntwo\n"
    finally:
        get_settings.cache_clear()


def test_strategies_shape_history(tmp_path):
    for strategy, merges in (("fast-forward", 0), ("rebase", 0), ("merge-commit", 3)):
        hub, root = new_hub(tmp_path / f"{strategy}.git", {f"f{i}": "x\n" for i in range(3)})
        for i in range(3):
            branch(hub, f"swarm/s{i}", root, {f"f{i}": f"{strategy}\n"})
            assert plumbing_merge(str(hub), f"swarm/s{i}", strategy).status == "merged"
        found = git(hub, "rev-list", "--merges", "main").split()
        assert len(found) == merges, strategy



def test_the_queue_lands_the_recorded_head_not_a_branch_moved_since(db, tmp_path, monkeypatch):
    """One agent force-pushes over another task's branch: the task's recorded commit lands, nothing else."""
    from agentswarm.config import get_settings
    from agentswarm.merge.queue import merge_task

    hub, root = new_hub(tmp_path / "hub.git", {"src/a.ts": lines(3), "src/b.ts": lines(3)})
    monkeypatch.setenv("HUB_PATH", str(hub))
    monkeypatch.setenv("MERGE_STRATEGY", "rebase")
    get_settings.cache_clear()
    try:
        recorded = branch(hub, "swarm/victim", root, {"src/a.ts": "victim's work\n"})[-1]
        with session_scope(db) as s:
            run = Run(max_tasks=10, max_tokens=10**6, max_dollars=1.0)
            s.add(run)
            s.flush()
            victim = _complete_task(s, run.id, "swarm/victim", ["src/a.ts"], recorded, feature_ids=[])
            orphan = _complete_task(s, run.id, "swarm/orphan", ["src/b.ts"], recorded, feature_ids=[])
            s.execute(HandoffRecord.__table__.update().where(HandoffRecord.task_id == orphan)
                      .values(head_sha=None))
        hijack = branch(hub, "swarm/hijack", root, {"src/b.ts": "planted\n"})[-1]
        git(hub, "update-ref", "refs/heads/swarm/victim", hijack)  # the branch moved after the handoff
        assert merge_task(victim) == "merged"
        assert read(hub, "main", "src/a.ts") == "victim's work\n"
        assert read(hub, "main", "src/b.ts") == lines(3)  # the planted change never reached main
        assert git(hub, "rev-parse", "refs/heads/swarm/victim") == hijack  # a moved branch is kept, not deleted
        assert merge_task(orphan) == "failed"
        with session_scope(db) as s:
            attempt = s.scalars(select(MergeAttempt).where(MergeAttempt.task_id == orphan)).one()
            assert "no complete handoff with a head commit" in attempt.error
            assert s.scalars(select(Event.kind).where(Event.task_id == orphan)).all() == ["merge.failed"]
    finally:
        get_settings.cache_clear()


def test_with_a_remote_hub_the_mirror_lands_the_imported_work_and_pushes_main(db, tmp_path, monkeypatch):
    """GIT_REPO_URL: sandboxes never push; their work is imported into the mirror, lands there, main is pushed."""
    from agentswarm.config import get_settings
    from agentswarm.git.hub import ensure_mirror
    from agentswarm.merge.queue import merge_task

    remote, root = new_hub(tmp_path / "remote.git", {"src/a.ts": lines(3)})
    mirror = tmp_path / "mirror.git"
    ensure_mirror(str(remote), mirror)
    head = branch(mirror, "swarm/r1", root, {"src/a.ts": "remote work\n"})[-1]  # as import_bundle leaves it
    monkeypatch.setenv("HUB_PATH", str(mirror))
    monkeypatch.setenv("GIT_REPO_URL", str(remote))
    get_settings.cache_clear()
    try:
        with session_scope(db) as s:
            run = Run(max_tasks=10, max_tokens=10**6, max_dollars=1.0)
            s.add(run)
            s.flush()
            tid = _complete_task(s, run.id, "swarm/r1", ["src/a.ts"], head, feature_ids=[])
        assert merge_task(tid) == "merged"
        assert read(remote, "main", "src/a.ts") == "remote work\n"  # published to the remote
    finally:
        get_settings.cache_clear()


def test_a_branch_past_the_conflict_cap_fails_and_gives_its_feature_back_to_the_planner(db, tmp_path, monkeypatch):
    """Other branches keep landing the same file: once MAX_CONFLICT_TASKS resolutions still conflict, the last
    fails, the feature is failed (one attempt) and ready to be planned afresh, not held in progress for good."""
    from agentswarm.config import get_settings
    from agentswarm.db.models import Feature, FeatureStatus
    from agentswarm.merge.queue import merge_task
    from agentswarm.planning.state import load_board

    hub, root = new_hub(tmp_path / "hub.git", {"src/a.ts": lines(3)})
    monkeypatch.setenv("HUB_PATH", str(hub))
    monkeypatch.setenv("MERGE_STRATEGY", "fast-forward")
    monkeypatch.setenv("MAX_CONFLICT_TASKS", "1")
    get_settings.cache_clear()
    monkeypatch.setattr("agentswarm.queue.send.send_run_task", lambda tid, p: None)
    try:
        with session_scope(db) as s:
            run = Run(max_tasks=10, max_tokens=10**6, max_dollars=1.0)
            s.add(run)
            s.add(Feature(id="f-a", category="c", title="a", status=FeatureStatus.in_progress, files=["src/a.ts"]))
            s.flush()
            run_id = run.id
            other = _complete_task(s, run_id, "swarm/other", ["src/a.ts"],
                                   branch(hub, "swarm/other", root, {"src/a.ts": "other\n"})[-1], feature_ids=[])
            mine = _complete_task(s, run_id, "swarm/mine", ["src/a.ts"],
                                  branch(hub, "swarm/mine", root, {"src/a.ts": "mine\n"})[-1], feature_ids=["f-a"])
        assert merge_task(other) == "merged"
        assert merge_task(mine) == "conflict"
        with session_scope(db) as s:
            ct = s.scalars(select(Task).where(Task.kind == "conflict")).one()
            assert load_board(s, run_id, 3).why_not("f-a") == "feature f-a already has a task in flight"
            # The resolution is made on the main of its time, but a third branch lands the file meanwhile.
            resolved = branch(hub, ct.branch, git(hub, "rev-parse", "main"), {"src/a.ts": "other\nmine\n"})[-1]
            third = _complete_task(s, run_id, "swarm/third", ["src/a.ts"],
                                   branch(hub, "swarm/third", git(hub, "rev-parse", "main"),
                                          {"src/a.ts": "third\n"})[-1], feature_ids=[])
            assert transition(s, ct.id, "pending", "assigned") and transition(s, ct.id, "assigned", "running")
            _hand_off(s, ct.id, resolved)
            assert transition(s, ct.id, "running", "complete")
            ct_id = ct.id
        assert merge_task(third) == "merged"
        assert merge_task(ct_id) == "conflict"
        with session_scope(db) as s:
            ct = s.get(Task, ct_id)
            assert ct.status == "failed" and "still conflicts with main in src/a.ts" in ct.error
            assert s.scalars(select(Task).where(Task.kind == "conflict")).one().id == ct_id  # no second one
            assert s.get(Feature, "f-a").status == FeatureStatus.failed
            [gave_up] = s.scalars(select(Event).where(Event.kind == "merge.gave_up")).all()
            assert gave_up.task_id == ct_id
            board = load_board(s, run_id, 3)
            assert board.why_not("f-a") is None and board.failures_by_feature["f-a"] == 1
            assert [f.id for f in board.ready()] == ["f-a"]
    finally:
        get_settings.cache_clear()
