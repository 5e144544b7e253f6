"""`/metrics`: the Prometheus text format, read back with prometheus_client's own parser, and the API's Host
and token rules."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from agentswarm.dashboard.app import TOKEN_ENV
from agentswarm.dashboard.server import HOST_REFUSED
from agentswarm.db.models import LLMCall, MergeAttempt, MergeStatus, Run, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.queue.send import send_run_task
from tests.dashboard.sample import MAIN_RESULTS

TOKEN = "tok-metrics-0123456789"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample as (name, sorted labels) -> value; the families' types are checked on the way."""
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.type in ("gauge", "counter", "info"), family
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _by(samples, name, **fixed) -> dict:
    """The samples of one metric whose labels include `fixed`, keyed by their other labels."""
    out = {}
    for (n, labels), value in samples.items():
        d = dict(labels)
        if n == name and all(d.get(k) == v for k, v in fixed.items()):
            out[tuple(v for k, v in labels if k not in fixed)] = value
    return out


def test_metrics_describe_the_run(start_dashboard, sample, db, redis_client):
    with session_scope(db) as s:  # two endpoints, one call without a name (recorded before endpoints had names)
        s.add_all([LLMCall(run_id=sample, role="worker", endpoint="glm-a", prompt_tokens=100, completion_tokens=10,
                           cost_usd=0.5, latency_ms=1500),
                   LLMCall(run_id=sample, role="worker", endpoint="glm-b", prompt_tokens=7, completion_tokens=3,
                           ok=False, error="HTTP 503")])
        states = dict(s.execute(select(Task.status, func.count()).where(Task.run_id == sample)
                                .group_by(Task.status)).all())
        landed = s.scalar(select(func.count()).select_from(MergeAttempt).where(
            MergeAttempt.status.in_((MergeStatus.merged, MergeStatus.reverted))))
        rejected = s.scalar(select(func.count()).select_from(MergeAttempt).where(
            MergeAttempt.status == MergeStatus.rejected))
        unnamed = s.execute(select(func.count(), func.sum(LLMCall.prompt_tokens)).where(
            LLMCall.run_id == sample, LLMCall.endpoint == "")).one()
    send_run_task("t1", 3)
    send_run_task("t2", 3)
    r = start_dashboard().get("/metrics")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    m = _samples(r.text)
    run = {"run": sample}
    assert _by(m, "agentswarm_run_info", **run) == {("false", "active"): 1.0}
    tasks = _by(m, "agentswarm_tasks", **run)
    assert tasks == {(st.value,): float(states.get(st, 0)) for st in TaskStatus}
    assert _by(m, "agentswarm_landings_total", **run) == {(): float(landed)} and landed > 0
    assert _by(m, "agentswarm_gate_culprits_total", **run) == {(): float(rejected)} and rejected == 3
    assert _by(m, "agentswarm_gate_runs_total", **run) == {(): 19.0}  # the sample's gate (tests/dashboard/sample.py)
    assert _by(m, "agentswarm_gate_run_seconds_total", **run) == {(): 190.0}
    assert _by(m, "agentswarm_gate_batches_total", **run) == {("green",): 4.0, ("red",): 3.0}
    assert _by(m, "agentswarm_main_green", **run) == {(): 1.0}
    assert _by(m, "agentswarm_main_checks_total", **run) == {
        (r,): float(MAIN_RESULTS.count(r)) for r in ("green", "red", "cannot-run")}
    calls = _by(m, "agentswarm_llm_calls_total", **run)
    assert calls[("glm-a", "ok")] == 1.0 and calls[("glm-b", "error")] == 1.0
    assert calls[("default", "ok")] == float(unnamed[0]) and unnamed[0] > 0
    tokens = _by(m, "agentswarm_llm_tokens_total", **run)
    assert tokens[("glm-a", "prompt")] == 100.0 and tokens[("glm-a", "completion")] == 10.0
    assert tokens[("default", "prompt")] == float(unnamed[1])
    assert _by(m, "agentswarm_llm_cost_dollars_total", **run)[("glm-a",)] == 0.5
    assert _by(m, "agentswarm_llm_latency_seconds_total", **run)[("glm-a",)] == 1.5
    assert _by(m, "agentswarm_queue_messages") == {("merge",): 0.0, ("monitor",): 0.0, ("plan",): 0.0,
                                                   ("gate",): 0.0, ("reconcile",): 0.0, ("work",): 2.0}
    assert _by(m, "agentswarm_redis_up") == {(): 1.0}
    held = _by(m, "agentswarm_sandboxes", **run)
    assert held[("running",)] == float(states.get(TaskStatus.running, 0)) > 0  # every running sample task has one
    assert ("agentswarm_sandboxes_reaped_total", (("run", sample),)) in m


def test_metrics_without_a_run_and_of_a_named_run(dash, db):
    m = _samples(dash.get("/metrics").text)
    assert {name for name, _ in m} == {"agentswarm_redis_up", "agentswarm_queue_messages"}
    assert dash.get("/metrics?run=nosuchrun").status_code == 404
    with session_scope(db) as s:
        old = Run(max_tasks=1, max_tokens=1, max_dollars=1.0, status="finished")
        s.add(old)
        s.flush()
        old_id = old.id
    m = _samples(dash.get(f"/metrics?run={old_id}").text)
    assert _by(m, "agentswarm_run_info", run=old_id) == {("false", "finished"): 1.0}
    assert "agentswarm_main_green" not in {name for name, _ in m}  # never checked: no verdict, no sample


def test_a_label_value_is_escaped(dash, db):
    with session_scope(db) as s:
        run = Run(max_tasks=1, max_tokens=1, max_dollars=1.0)
        s.add(run)
        s.flush()
        s.add(LLMCall(run_id=run.id, role="worker", endpoint='we"ird\\name\nx', prompt_tokens=1))
        run_id = run.id
    text = dash.get("/metrics").text
    assert 'endpoint="we\\"ird\\\\name\\nx"' in text  # escaped in the exposition ...
    m = _samples(text)
    assert _by(m, "agentswarm_llm_tokens_total", run=run_id, kind="prompt") == {('we"ird\\name\nx',): 1.0}  # ... read back


def test_metrics_follow_the_host_and_token_rules(start_dashboard, sample, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    dash = start_dashboard(bind="0.0.0.0", dashboard_hosts="prom.example")
    port = dash.server.server_address[1]
    assert dash.get("/metrics").status_code == 401  # off loopback: reads need the token
    assert dash.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = dash.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}", "Host": f"prom.example:{port}"})
    assert ok.status_code == 200 and "agentswarm_tasks" in ok.text
    for host in ("evil.example", f"evil.example:{port}", f"localhost:{port + 1}"):
        r = dash.get("/metrics", headers={"Host": host, "Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403 and r.json() == {"error": HOST_REFUSED}, host
    assert dash.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


@pytest.mark.parametrize("path", ["/metrics/", "/metricsx", "/api/metrics"])
def test_only_the_one_path(dash, path):
    assert dash.get(path).status_code == 404
