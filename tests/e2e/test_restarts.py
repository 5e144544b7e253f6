"""A run that survives its own services: Postgres restarted (fast shutdown, open connections cut) at each step of the
merge stage, while a handoff is stored and while the planner stores its tasks, under the real stack (beat, control,
reconcile, work and merge workers, the fake LLM, a gated merge queue); and Redis killed and restarted empty. Every
feature lands exactly once, none is failed with its code on main, and the run ends with every feature done."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from agentswarm.chaos import POINTS
from agentswarm.config import get_settings
from agentswarm.db import Feature, MergeAttempt, Run, Task, session_scope
from agentswarm.db.migrate import upgrade
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.git.hub import prepare_hub
from agentswarm.lifecycle.features import sync_features
from agentswarm.lifecycle.runs import start_run
from tests.e2e.conftest import FEATURES, tiny_target
from tests.support.env import ROOT
from tests.support.private_pg import private_pg  # noqa: F401  (the fixture)
from tests.support.waiting import wait_for

FILES = {"src/core/vec.ts", "src/core/vecmath.ts", "src/ui/hud.ts", "src/ui/coords.ts"}


def _state(url: str) -> tuple[str | None, dict[str, str]]:
    try:
        with session_scope(url) as s:
            run = s.scalars(select(Run)).first()
            return (run.status if run else None), dict(s.execute(select(Feature.id, Feature.status)).all())
    except Exception:  # the database is restarting: ask again
        return None, {}


def _env(url: str, target: Path, hub: Path, root: Path, llm_url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url, "HUB_PATH": str(hub), "TARGET_REPO_PATH": str(target),
        "SANDBOX_ROOT": str(root / "sandboxes"), "LLM_BASE_URL": llm_url, "LLM_API_KEY": "sk-restarts",
        "LLM_MAX_RETRIES": "1", "HEARTBEAT_INTERVAL_S": "1", "MAX_WORKERS": "3", "MERGE_DELETE_BRANCH": "true",
        "GATE": "batch", "GATE_PRESUBMIT": "off", "GATE_INSTALL": "", "GATE_COMMANDS": '["python3 check.py"]',
        "GATE_FULL_COMMANDS": "[]", "GATE_FULL_EVERY": "0", "GATE_BATCH_WAIT_S": "1",
        "RECONCILE_INSTALL": "", "RECONCILE_COMMANDS": '["python3 check.py"]', "RECONCILE_PAGE": "false",
        "PLAN_INTERVAL_S": "1", "MONITOR_INTERVAL_S": "2", "RECONCILE_INTERVAL_S": "2", "STALE_HEARTBEAT_S": "20",
        **extra,
    }


WORKERS = (("plan,monitor", "solo", 1), ("reconcile", "solo", 1), ("work", "threads", 3), ("merge", "solo", 1))


def _start_swarm(env: dict[str, str], url: str, target: Path, hub: Path, root: Path, celery_worker,
                 monkeypatch) -> tuple[subprocess.Popen, list]:
    """Settings here, the hub, the features and a run in Postgres, the four workers and beat; (beat, workers)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AGENTSWARM_CHAOS_AT", raising=False)  # this process only watches; workers take strikes
    get_settings.cache_clear()
    prepare_hub(None, hub, target)
    with session_scope(url) as s:
        sync_features(s, target / "FEATURES.json")
        start_run(s, get_settings())
    workers = [celery_worker(queues=q, pool=pool, concurrency=n, env=env) for q, pool, n in WORKERS]
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "agentswarm.queue.app", "beat",
                             f"--schedule={root / 'beat-schedule'}", "--loglevel=WARNING"],
                            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True), workers


def _assert_landed_once(url: str, hub: Path) -> None:
    """The run finished with every feature done, each landed by exactly one task recorded merged once."""
    with session_scope(url) as s:
        run = s.scalars(select(Run)).one()
        features = dict(s.execute(select(Feature.id, Feature.status)).all())
        merged = s.execute(select(MergeAttempt.task_id, func.count()).where(MergeAttempt.status == "merged")
                           .group_by(MergeAttempt.task_id)).all()
        landed_features = [f for t in s.scalars(select(Task).where(Task.id.in_([m[0] for m in merged])))
                           for f in t.feature_ids]
    assert run.stop_reason and "every feature is done" in run.stop_reason, run.stop_reason
    assert set(features.values()) == {"done"}, features
    assert all(n == 1 for _, n in merged), merged  # no task recorded merged twice
    assert sorted(landed_features) == sorted(f["id"] for f in FEATURES)  # each feature landed by exactly one task
    files = set(subprocess.run(["git", f"--git-dir={hub}", "ls-tree", "-r", "--name-only", "main"],
                               capture_output=True, text=True, check=True).stdout.split())
    assert FILES <= files
    branches = subprocess.run(["git", f"--git-dir={hub}", "for-each-ref", "refs/heads/swarm/"],
                              capture_output=True, text=True, check=True).stdout
    assert branches == ""  # every landed branch deleted, once its landing was recorded


def test_postgres_restarted_at_every_step_loses_and_doubles_nothing(private_pg, tmp_path, redis_client,  # noqa: F811
                                                                      celery_worker, monkeypatch):
    url = private_pg.create_database("agentswarm_restarts")
    upgrade(url)
    target, hub = tiny_target(tmp_path), tmp_path / "hub.git"
    chaos = tmp_path / "chaos"
    chaos.mkdir()
    with FakeLLMServer(latency_s=0.05) as llm:
        env = _env(url, target, hub, tmp_path, llm.url, AGENTSWARM_CHAOS_AT=",".join(POINTS),
                   AGENTSWARM_CHAOS_DIR=str(chaos), AGENTSWARM_CHAOS_CMD=private_pg.restart_command())
        beat, _ = _start_swarm(env, url, target, hub, tmp_path, celery_worker, monkeypatch)
        try:
            wait_for(lambda: _state(url)[0] == "finished", timeout=240, every=1.0)
        finally:
            beat.terminate()
            beat.wait(timeout=30)
    struck = sorted(p.name.removeprefix("struck-") for p in chaos.iterdir())
    assert struck == sorted(POINTS), f"points never reached: {set(POINTS) - set(struck)}"
    for p in chaos.iterdir():
        assert p.read_text().startswith("0\n"), p.read_text()  # each restart itself succeeded
    _assert_landed_once(url, hub)


@pytest.mark.slow  # ~40 s of a whole swarm: `make test-slow` (tests/e2e/test_chaos.py flushes Redis in the default run)
def test_redis_killed_and_restarted_empty_mid_run_loses_nothing(private_pg, tmp_path, celery_worker,  # noqa: F811
                                                                 monkeypatch):
    """The broker dies (SIGKILL) with work queued, reserved and in flight, and comes back empty on the same port."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed")
    url = private_pg.create_database("agentswarm_redis_restart")
    upgrade(url)
    port = _free_port()
    argv = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target, hub = tiny_target(tmp_path), tmp_path / "hub.git"
    try:
        with FakeLLMServer(latency_s=0.3) as llm:
            env = _env(url, target, hub, tmp_path, llm.url, REDIS_URL=f"redis://127.0.0.1:{port}/0")
            beat, workers = _start_swarm(env, url, target, hub, tmp_path, celery_worker, monkeypatch)
            restarted: list[str] = []

            def supervise() -> None:
                """What `make swarm`'s supervisor does (tests/e2e/test_make_swarm.py): a worker that died is started
                again. Kombu's Redis transport can end the threads-pool work worker ("Unrecoverable error") when
                the broker's connection drops mid-acknowledgement."""
                for i, w in enumerate(workers):
                    if w.proc.poll() is not None:
                        queues, pool, n = WORKERS[i]
                        restarted.append(queues)
                        workers[i] = celery_worker(queues=queues, pool=pool, concurrency=n, env=env)

            try:
                wait_for(lambda: "done" in _state(url)[1].values() and _in_flight(url) > 0, timeout=120, every=0.2)
                redis.kill()  # as the OOM killer would: nothing saved
                redis.wait(timeout=10)
                redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_for(lambda: _state(url)[0] == "finished", timeout=240, every=1.0, tick=supervise)
            finally:
                beat.terminate()
                beat.wait(timeout=30)
    finally:
        redis.kill()
        redis.wait(timeout=10)
    # The strike hit work in flight (waited for above); whatever Redis held is gone, and the run still finished:
    # messages are re-sent from Postgres (message.resent), tasks whose worker died run again (task.recovered).
    _assert_landed_once(url, hub)


def _in_flight(url: str) -> int:
    try:
        with session_scope(url) as s:
            return int(s.scalar(select(func.count()).where(Task.status.in_(["assigned", "running"]))) or 0)
    except Exception:
        return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
