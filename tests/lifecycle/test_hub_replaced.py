"""A run belongs to its hub: when the hub is made anew (`make clean` removed var/, Postgres kept its rows), the
old run stops, its finished branches are not merged into the new hub, and every feature starts over."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select, update

from agentswarm.db.models import Event, Feature, FeatureStatus, Run, Task
from agentswarm.db.session import session_scope
from agentswarm.db.states import transition
from agentswarm.git.hub import create_hub, main_sha
from agentswarm.lifecycle.runs import hub_replaced, start_run
from tests.git.hubkit import commit, git

ROOT = Path(__file__).resolve().parents[2]


def _finished_task(s, run_id: str) -> str:
    task = Task(run_id=run_id, description="d", title="t", scope=["src/a.ts"], status="running", attempts=1,
                branch="swarm/t", feature_ids=["core-001"])
    s.add(task)
    s.flush()
    assert transition(s, task.id, "running", "complete")
    return task.id


def test_the_same_hub_moved_forward_is_the_runs_own(loaded, make_settings, hub):
    settings = make_settings()
    with session_scope(loaded) as s:
        run = start_run(s, settings).id
    git(hub, "update-ref", "refs/heads/main", commit(hub, main_sha(hub), {"src/new.ts": "export {};\n"}, "landed"))
    with session_scope(loaded) as s:
        assert hub_replaced(s, settings) is None
        assert start_run(s, settings).id == run


def test_a_hub_made_anew_stops_the_run_drops_its_branches_and_restarts_the_features(loaded, make_settings, hub, tmp_path):
    settings = make_settings()
    with session_scope(loaded) as s:
        old = start_run(s, settings).id
        s.execute(update(Feature).where(Feature.id.in_(["core-001", "world-001"])).values(status="done"))
        finished = _finished_task(s, old)
    source = tmp_path / "again"
    (source / "src").mkdir(parents=True)
    (source / "src" / "index.ts").write_text("// made anew\n")
    shutil.rmtree(hub)
    create_hub(hub, source)
    with session_scope(loaded) as s:
        note = hub_replaced(s, settings)
        assert note and note.startswith(f"run {old} stopped: the hub at {hub} does not hold the main"), note
        assert "2 features start over, 1 finished branches of that run cannot land" in note, note
        assert hub_replaced(s, settings) is None  # once
        new = start_run(s, settings)
        assert new.id != old and new.config["main_at_start"] == main_sha(hub)
    with session_scope(loaded) as s:
        assert s.get(Run, old).status == "stopped" and "made anew or replaced" in s.get(Run, old).stop_reason
        assert set(s.scalars(select(Feature.status))) == {FeatureStatus.pending}
        assert s.get(Task, finished).status == "failed"
        (event,) = s.scalars(select(Event).where(Event.kind == "run.hub_replaced")).all()
        assert event.run_id == old and event.data["branches_dropped"] == 1 and event.data["features_reset"] == 2


def test_prepare_after_make_clean_says_so_and_starts_a_new_run(db, redis_client, tmp_path):
    """What a user sees: `agentswarm prepare` (what `make swarm` does first), the hub removed, prepare again."""
    env = {**os.environ, "HUB_PATH": str(tmp_path / "var" / "hub.git"), "SANDBOX_ROOT": str(tmp_path / "sb")}

    def prepare() -> str:
        out = subprocess.run([sys.executable, "-m", "agentswarm", "prepare"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    first = re.search(r"^run (\w+) active$", prepare(), re.M).group(1)
    shutil.rmtree(tmp_path / "var")
    again = prepare()
    assert re.search(rf"^hub: run {first} stopped: the hub at .*hub\.git does not hold the main this run started "
                     r"from \(\w{12}; its main is now \w{12}\): the hub was made anew or replaced; \d+ features start "
                     "over$", again, re.M), again
    second = re.search(r"^run (\w+) active$", again, re.M).group(1)
    assert second != first
    assert "hub: run" not in prepare()  # the new run is this hub's
