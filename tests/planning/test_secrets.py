"""The API key reaches the endpoint and nothing else: no log line, no stored row."""

from __future__ import annotations

import json
import logging

from sqlalchemy import text

from agentswarm.db.session import session_scope
from agentswarm.demo.fake_llm import FakeLLMServer
from agentswarm.demo.faults import Fault
from agentswarm.llm.factory import client_from_settings
from agentswarm.planning.planner import plan_tick
from agentswarm.planning.subplanner import maybe_decompose
from tests.support.runs import start

KEY = "sk-test-9f8e7d6c5b4a-SECRET"


def _echo_key(body: dict) -> str:
    """A model that quotes the request (the key never is in it) and proposes a task."""
    return json.dumps([{"title": f"Build core {KEY[:3]}", "description": "d", "scope": ["src/math/vec3.ts"],
                        "feature_ids": ["core-001"]}])


def test_the_api_key_is_in_no_log_line_and_no_stored_row(loaded, make_settings, redis_client, caplog):
    from agentswarm.db.models import Task

    caplog.set_level(logging.DEBUG)
    faults = [Fault.echo_auth(401), Fault.server_error(500), None]
    with FakeLLMServer(script=_echo_key, faults=lambda body: faults.pop(0) if faults else None) as fake:
        s = make_settings(llm_base_url=fake.url, llm_api_key=KEY)
        run_id = start(s)
        plan_tick(s)  # 401 whose body echoes the Authorization header
        plan_tick(s)  # 500
        plan_tick(s)  # a task
        with session_scope(loaded) as sess:
            sess.add(Task(run_id=run_id, title="big", description="d", branch="b", status="running",
                          scope=[f"src/x{i}.ts" for i in range(5)]))
            sess.flush()
            big = sess.query(Task).filter_by(title="big").one()
            maybe_decompose(sess, big, client_from_settings(s), settings=s)
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in fake.request_headers)  # the key was used
    assert len(fake.requests) == 4
    assert KEY not in caplog.text
    with session_scope(loaded) as sess:
        dumped = []
        for table in ("llm_calls", "events", "tasks", "runs", "features"):
            dumped += [str(r) for r in sess.execute(text(f"select row_to_json(t)::text from {table} t")).scalars()]
    blob = "\n".join(dumped)
    assert "401" in blob and "Bearer ***" in blob  # the echoed header was recorded, scrubbed ...
    assert KEY not in blob  # ... without the key
