"""The costs in the dashboard's summary add up to the run's spend (issue 17, item 3)."""

from __future__ import annotations

import pytest

from agentswarm.control.status import cost_lines, costs
from agentswarm.db.models import Run
from agentswarm.db.session import session_scope


def test_summary_carries_costs_that_add_up(dash, sample):
    body = dash.get("/api/summary").json()
    c = body["costs"]
    assert sum(e["cost_usd"] for e in c["endpoints"]) == pytest.approx(body["llm"]["cost_usd"], abs=1e-4)
    assert c["llm_usd"] == pytest.approx(c["total_usd"]) and c["sandbox_usd"] == 0
    assert sum(e["calls"] for e in c["endpoints"]) == body["llm"]["calls"]
    assert c["merged_commits"] > 0 and c["per_merged_commit_usd"] == pytest.approx(c["total_usd"] / c["merged_commits"])
    assert 0 <= c["wasted"]["cost_usd"] <= c["total_usd"]


def test_status_prints_a_line_per_endpoint(db, sample, make_settings):
    with session_scope(db) as s:
        report = costs(s, s.get(Run, sample), make_settings())
    lines = cost_lines(report)
    assert lines[0].startswith("cost:   $") and "a merged commit" in lines[0] and "wasted $" in lines[0]
    assert len(lines) == 1 + len(report["endpoints"])


def test_a_task_shows_what_it_cost(dash, sample):
    tasks = dash.get("/api/tasks?limit=500").json()["tasks"]
    costs = [dash.get(f"/api/tasks/{t['id']}").json()["cost"] for t in tasks]
    summary = dash.get("/api/summary").json()
    task_calls = sum(c["calls"] for c in costs)
    assert task_calls > 0
    assert all(c["cost_usd"] == pytest.approx(sum(c["endpoints"].values()), abs=1e-6) for c in costs)
    assert all(0 <= c["wasted_usd"] <= c["cost_usd"] + 1e-9 for c in costs)
    assert sum(c["wasted_usd"] for c in costs) == pytest.approx(summary["costs"]["wasted"]["cost_usd"], abs=1e-6)
