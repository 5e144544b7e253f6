"""The reconciler's fix tasks from replies shaped as real servers send them (issue 17): real hub, Postgres, fake LLM."""

from __future__ import annotations

import json

from sqlalchemy import select

from agentswarm.config import load_settings
from agentswarm.db import Event, LLMCall, Run, Task, session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.reconcile.tick import reconcile_tick
from tests.reconcile.hubs import make_hub
from tests.support import replies

BROKEN = ("import sys\n"
          "print('src/world/chunk.ts(12,5): error TS2304: Cannot find name \\'Chunk\\'.')\n"
          "sys.exit(2)\n")

FIXES = [{"title": f"Fix the type error in {p}", "description": f"Make {p} compile again.", "scope": [p],
          "acceptance": ["`npx tsc --noEmit` passes"], "priority": 1, "kind": "fix"}
         for p in ("src/world/chunk.ts", "src/ui/hud.ts", "src/engine/loop.ts")]


def _fix(db, tmp_path, script) -> tuple[dict, list[Task], list[str], FakeLLMServer]:
    hub = make_hub(tmp_path, {"check.py": BROKEN})
    with session_scope(db) as s:
        s.add(Run(max_tasks=100, max_tokens=10**7, max_dollars=10.0))
    with FakeLLMServer(script=script) as fake:
        settings = load_settings(hub_path=hub, sandbox_root=tmp_path / "sandboxes", llm_base_url=fake.url,
                                 reconcile_install="", reconcile_commands=["python3 check.py"],
                                 reconcile_max_fix_tasks=3, llm_max_retries=0)
        out = reconcile_tick(settings)
    with session_scope(db) as s:
        fixes = list(s.scalars(select(Task).where(Task.kind == "fix").order_by(Task.created_at)))
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
        s.expunge_all()
    return out, fixes, kinds, fake


def test_a_cut_reply_with_no_complete_fix_is_asked_again(db, tmp_path, redis_client):
    out, fixes, kinds, fake = _fix(db, tmp_path, [replies.cut_inside(FIXES, 0), json.dumps(FIXES[:1])])
    assert [f.scope for f in fixes] == [["src/world/chunk.ts"]] and len(fake.requests) == 2
    assert "at most 1 tasks" in fake.requests[1]["messages"][-1]["content"]
    assert "reconciler.reply_cut" in kinds


def test_a_cut_reply_keeps_its_complete_fixes(db, tmp_path, redis_client):
    out, fixes, kinds, fake = _fix(db, tmp_path, [replies.cut_inside(FIXES, 2)])
    assert [f.scope[0] for f in fixes] == ["src/world/chunk.ts", "src/ui/hud.ts"] and len(fake.requests) == 1
    assert "reconciler.reply_cut" in kinds and "reconciler.rejected" in kinds


def test_trailing_commas_keep_every_fix(db, tmp_path, redis_client):
    out, fixes, _, _ = _fix(db, tmp_path, [replies.trailing_commas(FIXES)])
    assert len(fixes) == 3 and len(out["fixes"]) == 3


def test_an_unreadable_reply_makes_no_fix_and_no_crash(db, tmp_path, redis_client):
    out, fixes, kinds, _ = _fix(db, tmp_path, [replies.unrepairable(FIXES)])
    assert fixes == [] and out["fixes"] == [] and out["error"] == "unparseable"
    assert "reconciler.unparseable" in kinds


def test_the_same_fix_twice_is_one_fix(db, tmp_path, redis_client):
    out, fixes, _, _ = _fix(db, tmp_path, [json.dumps([FIXES[0], FIXES[0]])])
    assert len(fixes) == 1


def test_fixes_without_titles_get_them_from_their_descriptions(db, tmp_path, redis_client):
    out, fixes, _, _ = _fix(db, tmp_path, [replies.without_titles(FIXES[:2])])
    assert [f.title for f in fixes] == ["Make src/world/chunk.ts compile again", "Make src/ui/hud.ts compile again"]


def test_a_reply_without_usage_is_counted_from_characters(db, tmp_path, redis_client):
    out, fixes, kinds, _ = _fix(db, tmp_path, [replies.no_usage(FIXES[:1])])
    with session_scope(db) as s:
        call = s.scalar(select(LLMCall).where(LLMCall.role == "reconciler"))
        assert call.prompt_tokens > 100 and call.completion_tokens > 20
    assert len(fixes) == 1 and "llm.usage_estimated" in kinds
