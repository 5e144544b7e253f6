"""End to end: the gated merge queue on the real stack, on VoxelCraft's own toolchain.

Real Celery workers (threads pool for work, one merge worker), Postgres, Redis, the git hub, local
sandboxes (bubblewrap when available), `npm ci` into the shared dependency cache once per session,
`tsc` and vitest run by presubmit in the agents' sandboxes and by the gate in its workspace. The
model is the simulator over HTTP, told to break branches the way models do (SIM_FAULTS).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from agentswarm.config import get_settings
from agentswarm.db import Event, Feature, HandoffRecord, MergeAttempt, Task, session_scope
from agentswarm.git.hub import prepare_hub
from agentswarm.lifecycle.features import sync_features
from agentswarm.lifecycle.runs import start_run
from agentswarm.monitor.tick import monitor_tick
from agentswarm.planning.planner import plan_tick
from agentswarm.testing.fake_llm import FakeLLMServer
from agentswarm.testing.sim_faults import parse_sim_faults
from agentswarm.testing.simulator import simulate
from tests.support.env import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="the gate's tests need node and npm (nodejs, npm)")

TARGET = ROOT / "target-repo"


def feature(fid: str, name: str) -> dict:
    return {"id": fid, "category": "core", "title": f"The {name} module", "priority": 2, "dependencies": [],
            "files": [f"src/gate/{name}.ts", f"src/gate/{name}.test.ts"], "description": f"A {name} module.",
            "acceptance": ["tsc and its test pass"]}


@pytest.fixture(scope="session")
def shared_deps(tmp_path_factory) -> Path:
    """One dependency cache for every gate test of the session (npm ci once per lock file)."""
    return tmp_path_factory.mktemp("gate-deps")


@pytest.fixture
def gated(tmp_path, db, redis_client, monkeypatch, shared_deps, celery_worker):
    """A VoxelCraft hub with a few features and the gate on; call it with the settings of the test."""
    started: list[FakeLLMServer] = []

    def make(features: list[dict], *, faults: str = "", fault_attempts: int = 0, **settings: str):
        target = tmp_path / "target"
        shutil.copytree(TARGET, target, ignore=shutil.ignore_patterns("node_modules", "dist", ".vite"))
        (target / "FEATURES.json").write_text(json.dumps({"project": "VoxelCraft", "version": 1,
                                                           "features": features}))
        hub = tmp_path / "hub.git"
        (tmp_path / "deps").symlink_to(shared_deps)
        llm = FakeLLMServer(simulator=functools.partial(simulate, faults=parse_sim_faults(faults),
                                                        fault_attempts=fault_attempts)).start()
        started.append(llm)
        env = {"HUB_PATH": str(hub), "TARGET_REPO_PATH": str(target), "SANDBOX_ROOT": str(tmp_path / "sandboxes"),
               "LLM_BASE_URL": llm.url, "LLM_API_KEY": "sk-gate-e2e-key", "LLM_MAX_RETRIES": "1",
               "HEARTBEAT_INTERVAL_S": "1", "MAX_WORKERS": "3", "MERGE_DELETE_BRANCH": "false",
               "RECONCILE_INSTALL": "", "GATE": "batch", "GATE_PRESUBMIT": "on", "GATE_BATCH_WAIT_S": "1",
               "GATE_FULL_EVERY": "0", "MAX_ATTEMPTS": "3", **settings}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        prepare_hub(None, hub, target)
        with session_scope(db) as s:
            sync_features(s, target / "FEATURES.json")
            start_run(s, get_settings())
        return env, hub, llm

    yield make
    for llm in started:
        llm.stop()
    get_settings.cache_clear()


def git(hub: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={hub}", *args], capture_output=True, text=True, check=True).stdout.strip()


def all_done(db) -> bool:
    with session_scope(db) as s:
        return all(f.status == "done" for f in s.scalars(select(Feature)))


def beat() -> None:
    plan_tick()
    monitor_tick()


def start_workers(celery_worker, env: dict[str, str]) -> None:
    celery_worker(queues="work", pool="threads", concurrency=3, env=env)
    celery_worker(queues="merge", pool="solo", env=env)


def green_trees(db) -> set[str]:
    with session_scope(db) as s:
        return {e.data["tree"] for e in s.scalars(select(Event).where(Event.kind == "gate.run"))
                if e.data.get("result") == "green"}


def assert_main_only_on_tested_trees(db, hub: Path) -> None:
    """Every value main took (each landing's main_after, and main now) is a tree the gate passed."""
    tested = green_trees(db)
    with session_scope(db) as s:
        values = {m.main_after for m in s.scalars(select(MergeAttempt).where(MergeAttempt.status == "merged"))
                  if m.main_after and m.batch_id}
    values.add(git(hub, "rev-parse", "main"))
    seed = git(hub, "rev-list", "--max-parents=0", "main")
    for sha in values - {seed}:
        assert git(hub, "rev-parse", f"{sha}^{{tree}}") in tested, f"main pointed at {sha[:12]}, never tested green"


def tsc_passes_on_main(hub: Path, tmp_path: Path, deps: Path) -> subprocess.CompletedProcess:
    """tsc on a clean export of main (the gate's tests run it in a sandbox; this is a check of the result)."""
    out = tmp_path / "main-check"
    out.mkdir()
    archive = subprocess.run(["git", f"--git-dir={hub}", "archive", "main"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    modules = next(deps.glob("*/node_modules"))
    (out / "node_modules").symlink_to(modules)
    return subprocess.run(["npx", "tsc", "--noEmit"], cwd=out, capture_output=True, text=True, timeout=300)


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
        first = s.scalars(select(MergeAttempt).where(MergeAttempt.batch_id == culprit.batch_id,
                                                     MergeAttempt.status == "merged")).one()
        assert first.position < culprit.position
        assert culprit.gate["clashes_with"]["task_id"] == first.task_id
        assert "TS2717" in culprit.gate["output"]
        task = s.get(Task, culprit.task_id)
        assert task.context["gate"]["clashes_with"]["task_id"] == first.task_id and task.attempts == 2
    assert_main_only_on_tested_trees(db, hub)


FLAKY = ("if [ -e ../flaky-seen ]; then echo ok; else touch ../flaky-seen; "
         "echo ' FAIL  src/gate/alpha.test.ts > The alpha module > sometimes fails'; exit 1; fi")


def test_a_red_that_does_not_reproduce_is_recorded_flaky_and_does_not_block(gated, db, celery_worker):
    env, hub, _ = gated([feature("g-001", "alpha")], GATE_PRESUBMIT="off",
                        GATE_COMMANDS=json.dumps(["node_modules/.bin/tsc --noEmit", FLAKY]))
    start_workers(celery_worker, env)
    wait_for(lambda: all_done(db), timeout=240, every=1.0, tick=beat)
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
