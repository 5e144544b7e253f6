"""The costs in the dashboard's summary add up to the run's spend (issue 17, item 3)."""

from __future__ import annotations

import pytest

from agentswarm.db.models import Run
from agentswarm.db.session import session_scope
from agentswarm.ops.status import cost_lines, costs


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
