"""The root planner against replies shaped as real servers send them (issue 17), over HTTP from the fake LLM."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from agentswarm.db.models import Event, LLMCall, Run, Task
from agentswarm.db.session import session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.faults import Fault
from agentswarm.planning.planner import plan_tick
from agentswarm.planning.reading import MAX_REPLY_CHARS
from tests.support import replies
from tests.support.runs import start

READY = {"core-001": "src/math/vec3.ts", "world-001": "src/world/chunk.ts", "ui-001": "src/ui/hud.ts",
         "ui-002": "src/ui/menu.ts"}


def task(fid: str | None, path: str, title: str | None = None) -> dict:
    return {"title": title or f"Build {fid or path}", "description": f"Write {path} as the feature asks.",
            "scope": [path], "acceptance": ["`npx tsc --noEmit` passes"], "priority": 3,
            "feature_ids": [fid] if fid else [], "kind": "feature"}


FOUR = [task(f, p) for f, p in READY.items()]


def plan(make_settings, script, **over) -> tuple[str, dict, FakeLLMServer]:
    with FakeLLMServer(script=script) as fake:
        s = make_settings(llm_base_url=fake.url, **over)
        run_id = start(s)
        report = plan_tick(s)["runs"][run_id]
    return run_id, report, fake


def stored(url: str, run_id: str) -> list[Task]:
    with session_scope(url) as s:
        return list(s.scalars(select(Task).where(Task.run_id == run_id).order_by(Task.created_at)))


def events(url: str, kind: str) -> list[str]:
    with session_scope(url) as s:
        return [e.message for e in s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))]


def calls(url: str) -> list[LLMCall]:
    with session_scope(url) as s:
        return list(s.scalars(select(LLMCall).where(LLMCall.role == "planner").order_by(LLMCall.id)))


def test_a_cut_reply_is_asked_again_once_for_a_smaller_batch(loaded, make_settings, redis_client):
    run_id, report, fake = plan(make_settings, [replies.cut_inside(FOUR, 1), json.dumps(FOUR[2:])])
    assert sorted(t.feature_ids[0] for t in stored(loaded, run_id)) == ["ui-001", "ui-002"]  # the second answer
    again = fake.requests[1]["messages"]
    assert again[:-1] == fake.requests[0]["messages"]
    assert "cut off by the token limit" in again[-1]["content"] and "at most 2 tasks" in again[-1]["content"]
    assert len(calls(loaded)) == 2  # both calls are paid for and recorded
    assert events(loaded, "planner.reply_cut") == [
        "reply cut off by the token limit with 1 complete tasks; asked again for at most 2"]


def test_a_retry_cut_again_keeps_the_most_complete_tasks_and_records_the_cut(loaded, make_settings, redis_client):
    run_id, report, fake = plan(make_settings, [replies.cut_inside(FOUR, 0), replies.cut_inside(FOUR, 1)])
    assert [t.feature_ids for t in stored(loaded, run_id)] == [["core-001"]]
    assert len(fake.requests) == 2 and len(calls(loaded)) == 2
    cut = events(loaded, "planner.reply_cut")
    assert len(cut) == 2 and "cut off by the token limit again: the 1 complete tasks" in cut[1]
    assert any("cut off inside its JSON" in r for r in events(loaded, "planner.rejected"))


def test_a_cut_reply_holding_half_a_batch_keeps_its_complete_tasks_without_asking_again(
        loaded, make_settings, redis_client):
    run_id, report, fake = plan(make_settings, [replies.cut_inside(FOUR, 3)])
    assert sorted(t.feature_ids[0] for t in stored(loaded, run_id)) == ["core-001", "ui-001", "world-001"]
    assert len(fake.requests) == 1 and report["planned"] == 3
    assert events(loaded, "planner.reply_cut") == [
        "reply cut off by the token limit: the 3 complete tasks before the cut are taken"]
    assert any("3 complete task(s) before the cut were read" in r for r in events(loaded, "planner.rejected"))


def test_trailing_commas_in_a_list_of_several_tasks_keep_every_task(loaded, make_settings, redis_client):
    run_id, report, _ = plan(make_settings, [replies.trailing_commas(FOUR)])
    assert len(stored(loaded, run_id)) == 4 and report["planned"] == 4


def test_json_beyond_repair_plans_nothing_and_says_why(loaded, make_settings, redis_client):
    run_id, report, _ = plan(make_settings, [replies.unrepairable(FOUR)])
    assert stored(loaded, run_id) == [] and report["error"] == "unparseable"
    [why] = events(loaded, "planner.unparseable")
    assert "malformed even after repair" in why and "Expecting ',' delimiter" in why


def test_a_reply_past_the_parsers_cap_keeps_the_tasks_before_it(loaded, make_settings, redis_client):
    run_id, report, _ = plan(make_settings, [replies.padded(FOUR, MAX_REPLY_CHARS // 4)])
    assert sorted(t.feature_ids[0] for t in stored(loaded, run_id)) == ["core-001", "ui-001", "world-001"]
    assert any(f"more than {MAX_REPLY_CHARS} characters" in r for r in events(loaded, "planner.rejected"))


def test_two_identical_tasks_without_features_are_stored_once(loaded, make_settings, redis_client):
    twin = task(None, "src/engine/loop.ts", "Add a fixed-step game loop")
    run_id, report, _ = plan(make_settings, [json.dumps([twin, FOUR[0], dict(twin)])])
    titles = sorted(t.title for t in stored(loaded, run_id))
    assert titles == ["Add a fixed-step game loop", "Build core-001"]
    assert any("merged into it" in r for r in events(loaded, "planner.rejected"))


def test_tasks_without_titles_are_planned_with_titles_from_their_descriptions(loaded, make_settings, redis_client):
    run_id, report, _ = plan(make_settings, [replies.without_titles(FOUR)])
    assert sorted(t.title for t in stored(loaded, run_id)) == sorted(f"Write {p} as the feature asks"
                                                                     for p in READY.values())


@pytest.mark.parametrize("budget", ["tokens", "dollars"])
def test_a_reply_without_usage_is_estimated_so_budgets_stop_the_run(loaded, make_settings, redis_client, budget):
    limits = {"run_max_tokens": 500} if budget == "tokens" else {
        "run_max_dollars": 0.01, "llm_price_in_per_mtok": 10.0, "llm_price_out_per_mtok": 10.0}
    run_id, report, fake = plan(make_settings, [replies.no_usage(FOUR)], **limits)
    [call] = calls(loaded)
    assert call.prompt_tokens > 500 and call.completion_tokens > 100  # counted 0 and $0 before
    assert budget == "tokens" or call.cost_usd > 0.01
    assert events(loaded, "llm.usage_estimated")
    assert stored(loaded, run_id) == [] and budget.rstrip("s") + " budget reached" in report["stopped"]
    with session_scope(loaded) as s:
        assert s.get(Run, run_id).status == "stopped"


def test_a_timeout_is_retried_like_a_5xx(loaded, make_settings, redis_client):
    with FakeLLMServer(script=[json.dumps(FOUR)], faults=[Fault.hang(5)]) as fake:
        s = make_settings(llm_base_url=fake.url, llm_timeout_s=0.5, llm_max_retries=1)
        run_id = start(s)
        report = plan_tick(s)["runs"][run_id]
    assert report["planned"] == 4 and len(fake.requests) == 2
