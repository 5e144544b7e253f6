"""The reconciler against a real hub, the real Postgres and the fake LLM over HTTP."""

from __future__ import annotations

from sqlalchemy import select

from agentswarm.config import load_settings
from agentswarm.db import Event, LLMCall, Run, Task, session_scope
from agentswarm.db.models import FlakyTest, MainCheck
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.reconcile.tick import reconcile_tick
from tests.reconcile.hubs import git, make_hub

BROKEN = ("import sys\n"
          "print('src/world/chunk.ts(12,5): error TS2304: Cannot find name \\'Chunk\\'.')\n"
          "print('src/ui/hud.ts(3,1): error TS1005: \\';\\' expected.')\n"
          "sys.exit(2)\n")


def _settings(tmp_path, hub, url, **kw):
    return load_settings(hub_path=hub, sandbox_root=tmp_path / "sandboxes", llm_base_url=url, reconcile_install="",
                         reconcile_commands=["python3 check.py"], reconcile_max_fix_tasks=3, **kw)


def _push(tmp_path, hub, name, text):
    clone = tmp_path / f"clone-{name}"
    git("clone", "-q", str(hub), str(clone), cwd=tmp_path)
    (clone / "check.py").write_text(text)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", name, cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)


def test_red_main_becomes_deduplicated_fix_tasks(db, tmp_path, redis_client):
    hub = make_hub(tmp_path, {"check.py": BROKEN})
    with session_scope(db) as s:
        run = Run(max_tasks=100, max_tokens=10**7, max_dollars=10.0)
        s.add(run)
        s.flush()
        run_id = run.id
    with FakeLLMServer() as llm:
        settings = _settings(tmp_path, hub, llm.url)
        out = reconcile_tick(settings)
        assert out["green"] is False and len(out["fixes"]) == 2
        assert "already checked" in reconcile_tick(settings)["skipped"]
        _push(tmp_path, hub, "still-broken", BROKEN + "# touched\n")
        again = reconcile_tick(settings)
        assert again["fixes"] == []  # the same failures are already being fixed
    with session_scope(db) as s:
        fixes = s.scalars(select(Task).where(Task.kind == "fix")).all()
        assert len(fixes) == 2 and {f.priority for f in fixes} == {1}
        assert sorted(p for f in fixes for p in f.scope) == ["src/ui/hud.ts", "src/world/chunk.ts"]
        assert all(f.enqueued_at is not None for f in fixes)  # dispatched
        calls = s.scalars(select(LLMCall).where(LLMCall.role == "reconciler")).all()
        assert len(calls) == 2 and all(c.run_id == run_id for c in calls)
        kinds = [e.kind for e in s.scalars(select(Event))]
        assert kinds.count("reconcile.red") == 2


def test_green_main_makes_no_tasks_and_no_llm_call(db, tmp_path):
    hub = make_hub(tmp_path, {"check.py": "print('ok')\n"})
    with session_scope(db) as s:
        s.add(Run(max_tasks=100, max_tokens=10**7, max_dollars=10.0))
    with FakeLLMServer() as llm:
        assert reconcile_tick(_settings(tmp_path, hub, llm.url))["green"] is True
        assert llm.requests == []


def test_dead_llm_is_recorded_and_retried_next_tick(db, tmp_path):
    hub = make_hub(tmp_path, {"check.py": BROKEN})
    with session_scope(db) as s:
        s.add(Run(max_tasks=100, max_tokens=10**7, max_dollars=10.0))
    settings = _settings(tmp_path, hub, "http://127.0.0.1:9", llm_max_retries=0)
    out = reconcile_tick(settings)
    assert out["error"] and out["fixes"] == []
    assert "skipped" not in reconcile_tick(settings)  # the sha is checked again


def test_missing_tool_is_reported_not_turned_into_fix_tasks(db, tmp_path):
    hub = make_hub(tmp_path, {"check.py": BROKEN})
    with session_scope(db) as s:
        s.add(Run(max_tasks=100, max_tokens=10**7, max_dollars=10.0))
    with FakeLLMServer() as llm:
        settings = load_settings(hub_path=hub, sandbox_root=tmp_path / "sandboxes", llm_base_url=llm.url,
                                 reconcile_install="",
                                 reconcile_commands=["no-such-build-tool --check"])
        out = reconcile_tick(settings)
        assert out["fixes"] == [] and "command not found" in out["error"] and llm.requests == []
    with session_scope(db) as s:
        assert s.scalars(select(Event.kind).where(Event.kind == "reconcile.cannot_run")).all()


def test_only_failures_that_reproduce_make_main_red_and_the_others_are_observed_flaky(db, tmp_path):
    """Run twice on the same tree: `always` fails both times (red, what bisection looks for); `once` fails
    only the first time (observed flaky). The sandbox is unisolated here only so the two runs can share a
    marker file outside their checkouts."""
    marker = tmp_path / "ran-once"
    check = ("import pathlib, sys\n"
             f"m = pathlib.Path({str(marker)!r})\n"
             "print(' FAIL  src/a.test.ts > always')\n"
             "if not m.exists():\n"
             "    m.write_text('x'); print(' FAIL  src/b.test.ts > once')\n"
             "print(' Test Files  1 failed')\n"
             "sys.exit(1)\n")
    hub = make_hub(tmp_path, {"check.py": check})
    with session_scope(db) as s:
        s.add(Run(max_tasks=100, max_tokens=10**7, max_dollars=10.0))
    settings = _settings(tmp_path, hub, "http://127.0.0.1:9", sandbox_isolation="none", llm_max_retries=0)
    out = reconcile_tick(settings)
    assert out["green"] is False
    with session_scope(db) as s:
        check_row = s.scalars(select(MainCheck)).one()
        assert check_row.result == "red" and check_row.failing_tests == ["src/a.test.ts > always"]
        flaky = s.scalars(select(FlakyTest)).one()
        assert flaky.name == "src/b.test.ts > once" and flaky.last_source == "reconciler"
