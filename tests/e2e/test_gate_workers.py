"""End to end: gate workers that share no filesystem with the orchestrator, one of them killed mid-run.

The swarm's work and merge workers as in the other gate tests (VoxelCraft, presubmit, the simulator over HTTP);
the gate runs go to the `gate` queue and are taken by two gate worker processes with var/ roots of their own and
no usable HUB_PATH: each fetches the trees it tests from the hub served read-only over smart HTTP on loopback,
with a token, into a mirror of its own. One is SIGKILLed while it holds a run: its lease runs out, the run goes
to the other, and every feature lands exactly once, main only ever on trees the gate passed.
"""

from __future__ import annotations

import secrets
import shutil
import threading

import pytest
from sqlalchemy import func, select

from agentswarm.db import Event, MergeAttempt, Task, session_scope
from agentswarm.db.models import GateRunRow
from agentswarm.git.serve import serve_hub
from tests.e2e.voxelcraft import all_done, assert_main_only_on_tested_trees, beat, feature, tsc_passes_on_main
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("npm") is None, reason="the gate's tests need node and npm (nodejs, npm)")

FEATURES = [feature(f"w-00{i}", name) for i, name in enumerate(("alpha", "beta", "gamma", "delta", "eps"), 1)]


def _runs(db) -> list[GateRunRow]:
    with session_scope(db) as s:
        rows = list(s.scalars(select(GateRunRow).order_by(GateRunRow.created_at)))
        s.expunge_all()
        return rows


def test_two_gate_workers_on_their_own_roots_one_killed_mid_run(gated, db, celery_worker, tmp_path, shared_deps):
    token = secrets.token_hex(16)
    speculative = {"GATE_RUNNER": "queue", "GATE_PARALLEL": "3", "GATE_LEASE_S": "6", "GATE_DELAY_S": "4",
                   "GATE_BATCH_MAX": "2"}
    env, hub, _ = gated(FEATURES, **speculative)
    server = serve_hub(hub, "127.0.0.1:0", token)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gate_workers = []
        for name in ("east", "west"):
            root = tmp_path / f"gate-{name}"  # a machine of its own: its sandboxes, mirror and deps cache
            root.mkdir()
            (root / "deps").symlink_to(shared_deps)  # a warm cache on that machine (npm ci once per lock file)
            gate_env = {**env, "HUB_PATH": str(root / "no-such-hub.git"), "SANDBOX_ROOT": str(root / "sandboxes"),
                        "GATE_HUB_URL": f"http://127.0.0.1:{server.server_address[1]}/hub.git",
                        "GATE_HUB_TOKEN": token, "LLM_API_KEY": ""}
            gate_workers.append(celery_worker(queues="gate", pool="threads", concurrency=2, env=gate_env))
        celery_worker(queues="work", pool="threads", concurrency=3, env=env)
        celery_worker(queues="merge", pool="solo", env=env)

        east, west = gate_workers
        east_pid = f"/{east.proc.pid}/"

        def east_holds_a_run() -> bool:
            beat()
            return any(r.state == "running" and east_pid in (r.worker or "") for r in _runs(db))

        wait_for(east_holds_a_run, timeout=300, every=0.5)
        east.kill()  # SIGKILL, mid-run
        wait_for(lambda: all_done(db), timeout=420, every=1.0, tick=beat)
    finally:
        server.shutdown()

    rows = _runs(db)
    west_pid = f"/{west.proc.pid}/"
    killed = [r for r in rows if r.attempts > 1]
    assert killed, "the run east held was never given to another worker"
    assert all(r.state in ("done", "cancelled") for r in rows)
    assert any(west_pid in (r.worker or "") for r in killed if r.state == "done")
    with session_scope(db) as s:
        merged = dict(s.execute(select(MergeAttempt.task_id, func.count()).where(MergeAttempt.status == "merged")
                                .group_by(MergeAttempt.task_id)).all())
        tasks = s.scalars(select(Task)).all()
        assert merged and all(n == 1 for n in merged.values()), merged  # every feature landed exactly once
        assert {t.id for t in tasks if t.status == "complete"} <= set(merged)
        requeued = s.scalars(select(Event).where(Event.kind == "gate.requeued")).all()
        assert any("lease" in e.data["why"] for e in requeued)
    assert_main_only_on_tested_trees(db, hub)
    check = tsc_passes_on_main(hub, tmp_path, shared_deps)
    assert check.returncode == 0, check.stdout[-2000:]
    # Neither gate worker ever had the hub on its filesystem: each tested from its own mirror.
    for name in ("east", "west"):
        assert (tmp_path / f"gate-{name}" / "gate-hub.git").is_dir()
        assert not (tmp_path / f"gate-{name}" / "no-such-hub.git").exists()
