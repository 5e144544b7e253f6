"""An endpoint's key is read from its variable at call time and never lands in rows, events or logs."""

from __future__ import annotations

import json
import logging

from sqlalchemy import select

from agentswarm.db.models import Event, LLMCall
from agentswarm.db.session import session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.faults import Fault
from agentswarm.lifecycle.accounting import record_llm_call
from agentswarm.llm.factory import client_from_settings
from agentswarm.planning.calls import ask, record
from tests.support.runs import start

KEY = "sk-endpoint-secret-5f4e3d2c1b0a"


def test_keys_stay_out_of_rows_events_and_logs(db, make_settings, redis_client, monkeypatch, caplog):
    monkeypatch.setenv("EP_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    # The first endpoint echoes the Authorization header back in a 5xx; the call fails over to the second,
    # which echoes it in a 401 (not the endpoint's fault: the error is stored).
    with FakeLLMServer(lambda body: "x", faults=[Fault.echo_auth(status=500)]) as one, \
            FakeLLMServer(lambda body: "y", faults=[Fault.echo_auth(status=401)]) as two:
        eps = [{"name": "one", "base_url": one.url, "key_env": "EP_KEY"},
               {"name": "two", "base_url": two.url, "key_env": "EP_KEY"}]
        s = make_settings(llm_endpoints=json.dumps(eps))
        run_id = start(s)
        outcome = ask(client_from_settings(s, "planner"), [{"role": "user", "content": "plan"}], s)
        assert one.request_headers[0]["Authorization"] == f"Bearer {KEY}"  # it was sent, read at call time
        assert two.request_headers[0]["Authorization"] == f"Bearer {KEY}"
    assert not outcome.ok and outcome.endpoint == "two"
    with session_scope(db) as sess:
        record(sess, outcome, run_id=run_id, task_id=None, role="planner", settings=s)
        # A gate's record carries the upstream's text as it came: stored scrubbed all the same.
        record_llm_call(sess, run_id=run_id, task_id=None, role="worker", model="m", prompt_tokens=1,
                        completion_tokens=1, latency_ms=5, ok=False, error=f"HTTP 401: bad key Bearer {KEY}",
                        settings=s, endpoint="one")
    with session_scope(db) as sess:
        rows = [(c.error, c.model, c.endpoint) for c in sess.scalars(select(LLMCall))]
        events = [(e.message, e.data) for e in sess.scalars(select(Event))]
    assert sorted(r[2] for r in rows) == ["one", "one", "two"]  # the failed-over call on "one" is recorded too
    assert all(r[0] for r in rows)
    assert KEY not in json.dumps(rows) and KEY not in json.dumps(events, default=str)
    assert KEY not in caplog.text
    assert KEY[-12:] not in json.dumps(rows)  # no piece of it either


def test_a_planner_call_that_failed_over_records_both_attempts(db, make_settings, redis_client, closed_port):
    with FakeLLMServer(lambda body: "[]") as good:
        eps = [{"name": "down", "base_url": f"http://127.0.0.1:{closed_port}"}, {"name": "up", "base_url": good.url}]
        s = make_settings(llm_endpoints=json.dumps(eps))
        run_id = start(s)
        outcome = ask(client_from_settings(s, "planner"), [{"role": "user", "content": "plan"}], s)
    with session_scope(db) as sess:
        record(sess, outcome, run_id=run_id, task_id=None, role="planner", settings=s)
    with session_scope(db) as sess:
        rows = [(c.endpoint, c.ok, c.error) for c in sess.scalars(select(LLMCall).order_by(LLMCall.id))]
    assert [(e, ok) for e, ok, _ in rows] == [("down", False), ("up", True)]
    assert "cannot connect" in rows[0][2] and "failed over" in rows[0][2]
