"""The read-only JSON API over a real database, Redis and HTTP server."""

from __future__ import annotations

import json
from pathlib import Path

from agentswarm.db.models import Event, HandoffRecord
from agentswarm.db.session import session_scope
from tests.dashboard import sample as sample_data
from tests.dashboard.conftest import SECRET_KEY


def test_summary_without_a_run(dash):
    r = dash.get("/api/summary")
    assert r.status_code == 200
    body = r.json()
    assert body["run"] is None and body["features"] == {}
    assert body["queues"] == {"plan": 0, "work": 0, "merge": 0, "gate": 0, "reconcile": 0, "monitor": 0}


def test_summary_of_the_sample_run(dash, sample, redis_client):
    redis_client.rpush("work", b"{}", b"{}")
    redis_client.rpush("merge\x06\x163", b"{}")
    body = dash.get("/api/summary").json()
    assert body["run"] == sample and body["status"] == "active"
    assert body["tasks"] == {"running": 14, "assigned": 3, "pending": 9, "complete": 26, "failed": 4,
                             "blocked": 3, "cancelled": 2}
    assert body["merges"] == {"merged": 23, "conflict": 2, "failed": 1, "rejected": 3}
    m = body["metrics"]
    assert m["merge_success_rate"] == round(23 / 29, 4)
    assert 23 <= m["commits_last_hour"] <= 69
    assert m["used"]["tasks"] == 61 and m["used"]["tasks_frac"] == 0.061
    assert m["used"]["dollars"] == body["llm"]["cost_usd"] > 0
    assert 0 < m["used"]["time_frac"] < 1
    assert body["queues"]["work"] == 2 and body["queues"]["merge"] == 1
    assert body["features"]["audio"] and sum(sum(c.values()) for c in body["features"].values()) == 38
    assert body["config"] == {"model": "glm-5", "workers": 100, "merge_strategy": "fast-forward",
                              "sandbox": "local", "unisolated": False, "steering": True,
                              "token_required": False}


def test_summary_has_the_gate(start_dashboard, sample):
    g = start_dashboard(gate="batch").get("/api/summary").json()["gate"]
    assert g["mode"] == "batch" and g["presubmit"] is True
    assert (g["batches"], g["red_batches"], g["runs"], g["run_seconds"]) \
        == (sample_data.GATE_BATCHES, sample_data.GATE_RED, sample_data.GATE_RUNS, 10.0 * sample_data.GATE_RUNS)
    assert (g["culprits"], g["flaky"], g["presubmit_caught"], g["landed"]) \
        == (sample_data.GATE_CULPRITS, sample_data.GATE_FLAKY, sample_data.GATE_CAUGHT, 23)
    t = g["in_test"]
    assert (t["batch_id"], t["stage"], t["size"], t["batch_size"]) == (sample_data.IN_TEST, "bisect 2/4", 2, 4)
    assert len(g["last_green"]) == 40 and len(g["recent_culprits"]) == 3
    whys = [c["why"] for c in g["recent_culprits"]]
    assert f"test: {sample_data.HOSTILE_TEST}" in whys and any(w.startswith("clashes with task ") for w in whys)
    merged = start_dashboard().get("/api/merges?status=merged&limit=100").json()["merges"]
    assert g["last_green"] in {m["main_after"] for m in merged}
    assert start_dashboard().get("/api/summary").json()["gate"]["mode"] == "off"  # the tests' GATE=off


def test_unisolated_sandboxes_are_flagged_for_the_page(start_dashboard, sample):
    """SANDBOX_ISOLATION=none is a choice a person must see: the summary says so and the page shows a warning."""
    body = start_dashboard(sandbox_isolation="none").get("/api/summary").json()
    assert body["config"]["unisolated"] is True
    page = (Path(__file__).resolve().parents[2] / "agentswarm/dashboard/static/app.js").read_text()
    assert "c.unisolated" in page and "agents are not isolated" in page


def test_summary_of_an_unknown_run_is_404(dash, sample):
    r = dash.get("/api/summary?run=nope")
    assert r.status_code == 404 and r.json() == {"error": "no run nope"}


def test_no_secret_or_service_url_in_any_reply(dash, sample):
    task = dash.get("/api/tasks?status=complete&limit=1").json()["tasks"][0]["id"]
    for path in ("/api/summary", "/api/tasks", f"/api/tasks/{task}", f"/api/tasks/{task}/transcript",
                 "/api/events", "/api/merges", "/"):
        text = dash.get(path).text
        assert SECRET_KEY not in text and "postgresql" not in text and "redis://" not in text, path


def test_task_list_filters_and_validates(dash, sample):
    running = dash.get("/api/tasks?status=running&limit=200").json()["tasks"]
    assert len(running) == 14 and {t["status"] for t in running} == {"running"}
    assert all(t["sandbox"] and t["elapsed_s"] > 0 and t["attempts"] >= 1 for t in running)
    both = dash.get("/api/tasks?status=pending,blocked").json()["tasks"]
    assert len(both) == 12
    assert len(dash.get("/api/tasks?limit=5").json()["tasks"]) == 5
    bad = dash.get("/api/tasks?status=bogus")
    assert bad.status_code == 400 and "bogus" in bad.json()["error"]
    assert dash.get("/api/tasks?limit=abc").status_code == 400
    assert dash.get("/api/tasks?limit=0").status_code == 400


def test_task_detail_has_handoffs_and_merges(dash, sample):
    merged = dash.get("/api/merges?status=merged&limit=1").json()["merges"][0]
    detail = dash.get(f"/api/tasks/{merged['task']}").json()
    assert detail["id"] == merged["task"] and detail["status"] == "complete"
    assert "<img" in detail["description"]  # raw in JSON; the page renders it as text
    assert len(detail["handoffs"]) == 1 and detail["handoffs"][0]["transcript_bytes"] > 0
    assert "transcript" not in detail["handoffs"][0]
    assert [m["status"] for m in detail["merges"]] == ["merged"]
    missing = dash.get("/api/tasks/doesnotexist")
    assert missing.status_code == 404 and missing.json() == {"error": "no task doesnotexist"}


def test_transcript_is_parsed_and_capped(dash, sample, db):
    done = dash.get("/api/tasks?status=complete&limit=1").json()["tasks"][0]["id"]
    tr = dash.get(f"/api/tasks/{done}/transcript").json()
    kinds = [e["kind"] for e in tr["entries"]]
    assert kinds[:4] == ["note", "system", "user", "assistant"] and kinds[-1] == "unparsed"
    assert tr["tokens"] == {"prompt": 5210 + 6800 + 8420, "completion": 96 + 1450 + 60}
    assert tr["entries"][3]["tool_calls"][0]["name"] == "run"
    with session_scope(db) as s:
        s.add(HandoffRecord(task_id=done, attempt=9, status="failed",
                      transcript="\n".join(json.dumps({"kind": "tool", "result": "y" * 9000}) for _ in range(1000))))
    latest = dash.get(f"/api/tasks/{done}/transcript").json()
    assert latest["attempt"] == 9 and latest["lines"] == 1000 and latest["truncated"] is True
    assert len(latest["entries"]) == 400 and len(latest["entries"][0]["result"]) < 9000
    assert dash.get(f"/api/tasks/{done}/transcript?attempt=1").json()["attempt"] == 1
    assert dash.get(f"/api/tasks/{done}/transcript?attempt=5").status_code == 404
    pending = dash.get("/api/tasks?status=pending&limit=1").json()["tasks"][0]["id"]
    assert dash.get(f"/api/tasks/{pending}/transcript").json()["entries"] == []
    assert dash.get("/api/tasks/nope/transcript").status_code == 404


def test_events_poll_incrementally(dash, sample, db):
    first = dash.get("/api/events?limit=500").json()
    kinds = [e["kind"] for e in first["events"]]
    assert "metrics.snapshot" not in kinds and kinds[0] == "run.started" and kinds[-1] == "planner.planned"
    ids = [e["id"] for e in first["events"]]
    assert ids == sorted(ids) and first["last_id"] == ids[-1]
    assert dash.get(f"/api/events?after={first['last_id']}").json() == {"last_id": first["last_id"], "events": []}
    with session_scope(db) as s:
        s.add(Event(run_id=sample, kind="metrics.snapshot"))
        s.add(Event(run_id=sample, task_id="t1", kind="task.complete", message="<b>done</b>"))
        s.add(Event(run_id=None, kind="features.synced", message="global"))
        s.add(Event(run_id=None, kind="metrics.snapshot"))
    after = dash.get(f"/api/events?after={first['last_id']}").json()
    assert [e["kind"] for e in after["events"]] == ["task.complete", "features.synced"]
    assert after["events"][0]["message"] == "<b>done</b>"
    assert after["last_id"] == first["last_id"] + 4  # past the snapshots too
    assert dash.get("/api/events?after=-1").status_code == 400


def test_merge_feed_newest_first(dash, sample):
    merges = dash.get("/api/merges?limit=100").json()["merges"]
    assert len(merges) == 29
    times = [m["finished_at"] for m in merges]
    assert times == sorted(times, reverse=True)
    conflicts = dash.get("/api/merges?status=conflict").json()["merges"]
    assert len(conflicts) == 2 and conflicts[0]["conflict_files"] == ["src/world/chunk.ts", "src/world/mesh.ts"]
    landed = [m for m in merges if m["status"] == "merged"]
    assert all(len(m["main_after"]) == 40 and m["commits"] >= 1 and m["strategy"] == "rebase" for m in landed)
    assert all(m["batch"] and m["position"] is not None and m["why"] is None for m in landed)
    rejected = dash.get("/api/merges?status=rejected").json()["merges"]
    assert len(rejected) == 3 and all(m["why"] and m["batch"] and m["main_after"] is None for m in rejected)
    assert sum(m["flaky"] for m in merges) == 1


def test_routing_errors_are_json(dash):
    assert dash.get("/api/nope").status_code == 404 and "error" in dash.get("/api/nope").json()
    r = dash.post("/api/summary", {})
    assert r.status_code == 405 and r.json() == {"error": "method not allowed"}
    assert dash.get("/static/../server.py").status_code == 404
    assert dash.get("/static/%2e%2e/server.py").status_code == 404
    assert dash.get("/etc/passwd").status_code == 404


def test_page_and_assets_are_served(dash):
    page = dash.get("/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<script src="/static/app.js">' in page.text
    js = dash.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    assert ".innerHTML" not in js.text  # everything is rendered as text nodes
    assert dash.get("/static/style.css").headers["Content-Type"].startswith("text/css")


def test_requests_for_other_hosts_are_refused(dash):
    r = dash.get("/api/summary", headers={"Host": "evil.example:8080"})
    assert r.status_code == 403
    port = dash.server.server_address[1]
    assert dash.get("/api/summary", headers={"Host": f"localhost:{port}"}).status_code == 200
    assert dash.get("/api/summary", headers={"Host": f"localhost:{port + 1}"}).status_code == 403  # another port


def test_a_database_that_does_not_answer_is_503_without_traceback(start_dashboard, db):
    down = start_dashboard(database_url=db.rsplit("/", 1)[0] + "/agentswarm_no_such_database")
    r = down.get("/api/summary")
    assert r.status_code == 503 and r.json() == {"error": "the database does not answer"}
