"""`agentswarm status` (text and --json) says what is blocked by what, the task to retry, and a stuck run's end."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from click.testing import CliRunner

from agentswarm.config import get_settings
from agentswarm.db.models import Run, Task
from agentswarm.db.session import session_scope
from agentswarm.db.states import transition
from agentswarm.lifecycle.features import mark_features_done, mark_features_failed, sync_features
from agentswarm.ops.cli import cli
from agentswarm.planning.blocked import refresh_run
from agentswarm.planning.state import load_board
from agentswarm.planning.stuck import settle_stuck
from tests.planning.test_blocked import CHAIN
from tests.support.runs import start


@pytest.fixture
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_status_names_what_is_blocked_by_what_and_when_a_stuck_run_stops(loaded, make_settings, redis_client,
                                                                         fresh_settings):
    s = make_settings(max_attempts=1, reconcile_commands=[], run_stuck_grace_s=600)
    run_id = start(s)
    with session_scope(loaded) as sess:
        sync_features(sess, {"features": CHAIN})
        t = Task(run_id=run_id, title="Chunk storage", description="d", branch="swarm/x", feature_ids=["world-001"])
        sess.add(t)
        sess.flush()
        for a, b in (("pending", "assigned"), ("assigned", "running"), ("running", "failed")):
            transition(sess, t.id, a, b, attempts=1, error="tsc failed")
        mark_features_failed(sess, ["world-001"])
        task_id = t.id
        mark_features_done(sess, ["core-001", "ui-001", "ui-002"])  # only the blocked chain is left
        blocking = refresh_run(sess, run_id, s.max_attempts)
        run = sess.get(Run, run_id)
        assert settle_stuck(sess, run, s, load_board(sess, run_id, s.max_attempts), blocking)
        since = datetime.fromisoformat(run.config["stuck"]["since"])
    out = CliRunner().invoke(cli, ["status"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "blocked: 3 features wait on 1 that failed for good" in lines
    [root] = [ln for ln in lines if ln.startswith("  world-001 ")]
    assert root.startswith(f"  world-001 failed for good: 1 task ended without landing; the last, {task_id}, failed")
    assert root.endswith(f" · blocks world-002, world-003, world-004 · `agentswarm retry {task_id}`")
    assert any(ln.startswith("stuck:  nothing runnable: world-001 failed for good") for ln in lines)
    assert f"        since {since.strftime('%H:%M:%S')}; the run stops at " in out.output
    body = json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)["blocked"]
    assert body["failed_for_good"] == 1 and body["blocked"] == 3 and body["stuck"]["since"] == since.isoformat()
    assert body["features"] == [{"feature": "world-001", "reason": body["features"][0]["reason"],
                                 "blocks": ["world-002", "world-003", "world-004"], "retry": task_id}]


def test_status_says_nothing_of_blocking_when_nothing_is_blocked(loaded, make_settings, fresh_settings):
    start(make_settings())
    out = CliRunner().invoke(cli, ["status"])
    assert out.exit_code == 0, out.output
    assert "blocked:" not in out.output and "stuck:" not in out.output
