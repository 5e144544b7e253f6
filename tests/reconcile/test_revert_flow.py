"""A red main, end to end at the stage level: checks, bisection in sandboxes, a revert through the merge queue.

Real hub, real Postgres and Redis, real sandboxes (bubblewrap): tasks land through `merge_task`,
the reconciler finds the landing that broke `check.py`, hands a revert to the queue, and its
landing reopens the task with the output; main is green again, by a new commit, never a rewrite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from agentswarm.config import load_settings
from agentswarm.db import Event, Run, Task, session_scope
from agentswarm.db.models import Feature, FeatureStatus, HandoffRecord, MainCheck, MergeAttempt, TaskStatus
from agentswarm.git.refs import is_ancestor
from agentswarm.lifecycle.runs import start_run
from agentswarm.merge.queue import merge_task
from agentswarm.reconcile.health import health
from agentswarm.reconcile.tick import reconcile_tick
from agentswarm.sandbox.factory import check_backend_for
from tests.reconcile.hubs import git, main_of, make_hub
from tests.support.waiting import wait_for

pytestmark = pytest.mark.bwrap

CHECK = ("import pathlib, sys\n"
         "bad = sorted(str(p) for p in pathlib.Path('.').glob('*.txt') if 'BROKEN' in p.read_text())\n"
         "print('broken files:', bad)\n"
         "sys.exit(1 if bad else 0)\n")


def _settings(hub, **kw):
    return load_settings(hub_path=hub, sandbox_root=hub.parent / "sandboxes", llm_base_url="http://127.0.0.1:9", llm_max_retries=0, reconcile_install="",
                         reconcile_commands=["python3 check.py"], reconcile_page=False, **kw)


def _complete_task(db, tmp_path, hub, run_id: str, name: str, text: str, feature: str | None = None) -> str:
    """A complete task whose branch (one commit adding name.txt, on main as it is now) is in the hub."""
    clone = tmp_path / f"clone-{name}"
    git("clone", "-q", str(hub), str(clone), cwd=tmp_path)
    (clone / f"{name}.txt").write_text(text)
    git("add", ".", cwd=clone)
    git("-c", "user.name=agent", "-c", "user.email=a@a", "commit", "-qm", f"add {name}", cwd=clone)
    head = git("rev-parse", "HEAD", cwd=clone)
    with session_scope(db) as s:
        t = Task(run_id=run_id, kind="feature", status=TaskStatus.complete, title=f"add {name}",
                 description=name, scope=[f"{name}.txt"], branch="x", attempts=1, max_attempts=3,
                 feature_ids=[feature] if feature else [])
        s.add(t)
        s.flush()
        t.branch = f"swarm/{t.id}"
        s.add(HandoffRecord(task_id=t.id, attempt=1, status="complete", head_sha=head, commits=[head]))
        task_id, branch = t.id, t.branch
    git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=clone)
    return task_id


@pytest.mark.parametrize("strategy", ["rebase", "merge-commit"])
def test_the_landing_that_broke_main_is_reverted_through_the_queue_and_its_task_reopened(db, tmp_path, redis_client,
                                                                                         strategy):
    hub = make_hub(tmp_path, {"check.py": CHECK, "base.txt": "ok"})
    settings = _settings(hub, merge_strategy=strategy)
    with session_scope(db) as s:
        s.add(Feature(id="f-broken", category="world", title="the broken one"))
        run_id = start_run(s, settings).id
    assert reconcile_tick(settings)["green"] is True  # the start is green
    start = main_of(hub)

    ids = [_complete_task(db, tmp_path, hub, run_id, f"part{i}", "BROKEN" if i == 3 else "fine",
                          feature="f-broken" if i == 3 else None) for i in range(1, 7)]
    for task_id in ids:
        assert merge_task(task_id, settings) == "merged"
    red_main = main_of(hub)
    with session_scope(db) as s:
        assert s.get(Feature, "f-broken").status == FeatureStatus.done

    out = reconcile_tick(settings)
    assert out["green"] is False and out["culprit"] == ids[2], out
    revert_id = out["revert"]
    with session_scope(db) as s:
        check = s.scalars(select(MainCheck).where(MainCheck.sha == red_main)).one()
        assert check.result == "red" and check.action == "revert" and check.culprit_task_id == ids[2]
        assert check.bisect["good"] == start and check.bisect["steps"] >= 2
        assert [c["culprit"] for c in check.bisect["culprits"]] == [ids[2]] and check.culprit_sha
        revert = s.get(Task, revert_id)
        assert revert.kind == "revert" and revert.status == "complete" and revert.origin_id == ids[2]
        assert s.get(Task, ids[2]).status == "complete"  # reopened only once the revert lands
    assert reconcile_tick(settings)["skipped"].startswith(f"main {red_main[:10]} already checked")

    assert merge_task(revert_id, settings) == "merged"
    fixed = main_of(hub)
    assert is_ancestor(hub, red_main, fixed)  # a new commit on top: main's history is never rewritten
    files = git("--git-dir", str(hub), "ls-tree", "--name-only", fixed, cwd=tmp_path).split()
    assert "part3.txt" not in files and {f"part{i}.txt" for i in (1, 2, 4, 5, 6)} <= set(files)
    with session_scope(db) as s:
        culprit = s.get(Task, ids[2])
        assert culprit.status == "pending" and culprit.priority == 1
        assert culprit.context["gate"]["source"] == "reconciler"
        assert "broken files: ['part3.txt']" in culprit.context["gate"]["output"]
        assert s.scalars(select(MergeAttempt.status).where(MergeAttempt.task_id == ids[2])).all() == ["reverted"]
        assert s.get(Feature, "f-broken").status == FeatureStatus.in_progress
        assert {e.kind for e in s.scalars(select(Event))} >= {"reconcile.red", "reconcile.revert", "reconcile.reverted"}
        assert all(s.get(Task, i).status == "complete" for i in ids if i != ids[2])

    green = reconcile_tick(settings)
    assert green["green"] is True and green["sha"] == fixed
    with session_scope(db) as s:
        figures = health(s, run_id)
    assert figures["reverts"] == {"made": 1, "landed": 1, "failed": 0}
    assert figures["time_to_green_s"]["spells"] == 1 and figures["time_to_green_s"]["p50"] > 0
    assert figures["red_for_s"] is None and figures["green_share"] == pytest.approx(2 / 3, abs=0.01)


def test_no_green_to_bisect_from_falls_back_to_fix_tasks(db, tmp_path, redis_client):
    hub = make_hub(tmp_path, {"check.py": CHECK, "base.txt": "BROKEN"})
    settings = _settings(hub)
    with session_scope(db) as s:
        start_run(s, settings)
    out = reconcile_tick(settings)  # the model is unreachable: the fallback's error is reported, nothing reverted
    assert out["green"] is False and "revert" not in out and out["error"]
    assert "already red at the run's start" in out["revert_skipped"] or "no green" in out["revert_skipped"]
    with session_scope(db) as s:
        assert s.scalars(select(Event.kind).where(Event.kind == "reconcile.no_revert")).all()
        assert s.scalars(select(Task).where(Task.kind == "revert")).all() == []


def test_a_commit_no_task_landed_is_not_reverted(db, tmp_path, redis_client):
    hub = make_hub(tmp_path, {"check.py": CHECK, "base.txt": "ok"})
    settings = _settings(hub)
    with session_scope(db) as s:
        run_id = start_run(s, settings).id
    assert reconcile_tick(settings)["green"] is True
    clone = tmp_path / "person"
    git("clone", "-q", str(hub), str(clone), cwd=tmp_path)
    (clone / "x.txt").write_text("BROKEN")
    git("add", ".", cwd=clone)
    git("-c", "user.name=p", "-c", "user.email=p@p", "commit", "-qm", "by hand", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    out = reconcile_tick(settings)
    assert "no task's landing holds" in out["revert_skipped"]
    with session_scope(db) as s:
        check = s.scalars(select(MainCheck).where(MainCheck.run_id == run_id, MainCheck.result == "red")).one()
        assert check.culprit_sha == main_of(hub) and check.culprit_task_id is None
        assert s.get(Run, run_id).status == "active"


def test_a_reconciler_killed_mid_bisection_leaves_nothing_half_done_and_the_next_tick_finishes(db, tmp_path,
                                                                                              redis_client):
    slow = "import time\ntime.sleep(1.5)\n" + CHECK  # every step takes a while: time to kill it mid-bisection
    hub = make_hub(tmp_path, {"check.py": slow, "base.txt": "ok"})
    settings = _settings(hub)
    with session_scope(db) as s:
        run_id = start_run(s, settings).id
    ids = [_complete_task(db, tmp_path, hub, run_id, f"p{i}", "BROKEN" if i == 4 else "fine") for i in range(8)]
    for task_id in ids:
        assert merge_task(task_id, settings) == "merged"
    env = {**os.environ, "HUB_PATH": str(hub), "SANDBOX_ROOT": str(settings.sandbox_root),
           "RECONCILE_INSTALL": "", "RECONCILE_COMMANDS": json.dumps(["python3 check.py"]),
           "RECONCILE_PAGE": "false", "LLM_BASE_URL": "http://127.0.0.1:9"}
    child = subprocess.Popen([sys.executable, "-c", "from agentswarm.reconcile.tick import reconcile_tick; "
                              "reconcile_tick()"], env=env, start_new_session=True)
    try:
        def bisecting() -> bool:  # the red check is stored and a bisection step's sandbox is at work
            return any((settings.sandbox_root / "reconcile").glob("bisect-*/logs/exec-*"))

        wait_for(bisecting, timeout=60, every=0.1)
        time.sleep(1.0)
        assert child.poll() is None
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    with session_scope(db) as s:
        check = s.scalars(select(MainCheck)).one()
        assert check.action is None and s.scalars(select(Task).where(Task.kind == "revert")).all() == []

    out = reconcile_tick(settings)  # the lock died with the killed process; the stored red is acted on
    assert out["culprit"] == ids[4] and out["revert"]
    with session_scope(db) as s:
        assert len(s.scalars(select(MainCheck)).all()) == 1  # not checked again: bisected from the stored red
        assert len(s.scalars(select(Task).where(Task.kind == "revert")).all()) == 1
    backend = check_backend_for(settings)
    assert backend.list("reconcile") == []  # the killed bisection's sandbox was removed, its processes too


def test_two_breaks_are_both_reverted_in_one_tick_and_a_revert_on_its_way_is_not_searched_for_again(
        db, tmp_path, redis_client):
    checker = ("import pathlib, sys\n"
               "bad = sorted(p.stem for p in pathlib.Path('.').glob('*.txt') if 'BROKEN' in p.read_text())\n"
               "for name in bad: print(f' FAIL  src/{name}.test.ts > breaks')\n"
               "sys.exit(1 if bad else 0)\n")
    hub = make_hub(tmp_path, {"check.py": checker, "base.txt": "ok"})
    settings = _settings(hub)
    with session_scope(db) as s:
        run_id = start_run(s, settings).id
    assert reconcile_tick(settings)["green"] is True
    ids = [_complete_task(db, tmp_path, hub, run_id, f"t{i}", "BROKEN" if i in (1, 4) else "fine") for i in range(6)]
    for task_id in ids:
        assert merge_task(task_id, settings) == "merged"
    out = reconcile_tick(settings)
    assert sorted(r["culprit"] for r in out["reverts"]) == sorted([ids[1], ids[4]]), out
    with session_scope(db) as s:
        reverts = s.scalars(select(Task).where(Task.kind == "revert")).all()
        assert {r.origin_id for r in reverts} == {ids[1], ids[4]}
        assert {m for r in reverts for m in r.context["revert"]["marks"]} == {"src/t1.test.ts > breaks",
                                                                              "src/t4.test.ts > breaks"}
    # main moves on before the reverts land: both failures are accounted for, nothing is bisected again
    late = _complete_task(db, tmp_path, hub, run_id, "late", "fine")
    assert merge_task(late, settings) == "merged"
    again = reconcile_tick(settings)
    assert again["note"] == "every failure is explained by a revert on its way"
    for r in out["reverts"]:
        assert merge_task(r["revert"], settings) == "merged"
    assert reconcile_tick(settings)["green"] is True
    with session_scope(db) as s:
        assert {s.get(Task, i).status for i in (ids[1], ids[4])} == {"pending"}
