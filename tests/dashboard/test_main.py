"""Main's health on the dashboard: GET /api/runs/{id}/main, the screenshots of green mains, and POST /api/reconcile."""

from __future__ import annotations

import base64
import http.client
import json

import pytest
from kombu.exceptions import OperationalError

from agentswarm.control import steering
from agentswarm.dashboard.app import TOKEN_ENV
from agentswarm.queue.broker import queue_keys
from agentswarm.queue.names import RECONCILE_TICK
from agentswarm.reconcile.page import screenshots_root
from tests.dashboard import sample as sample_data

TOKEN = "tok-main-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def hub(tmp_path):
    """The test settings' hub path, with the sample's screenshots kept beside it."""
    path = tmp_path / "var" / "hub.git"
    sample_data.write_screenshots(screenshots_root(path))
    return path


def test_main_of_the_sample_run(start_dashboard, sample, hub):
    m = start_dashboard(hub_path=hub).get(f"/api/runs/{sample}/main").json()
    newest = sample_data.MAIN_SHAS[-1]
    assert m["main"]["sha"] == newest and m["main"]["result"] == "green" and m["main"]["age_s"] >= 0
    assert m["health"]["shas_checked"] == 5 and m["shas_green"] == 3 and m["health"]["time_to_green_s"]["spells"] == 2
    assert [c["sha"] for c in m["checks"]] == sample_data.MAIN_SHAS[::-1]
    assert m["last_red"]["failing_tests"] == [sample_data.HOSTILE_TEST] and m["last_red"]["action"] == "fix"
    assert m["checks"][3]["revert_landed"] is True and m["checks"][3]["why"] == "npx tsc --noEmit"
    assert [q["name"] for q in m["quarantined"]] == sample_data.QUARANTINED_TESTS
    assert (m["flaky"]["observed"], m["flaky"]["quarantined"], m["flaky"]["released"]) == (1, 2, 1)
    assert m["screenshots"] == sample_data.SHOTS[::-1]  # newest first
    missing = start_dashboard(hub_path=hub).get("/api/runs/nope/main")
    assert missing.status_code == 404 and missing.json() == {"error": "no run nope"}


def test_a_screenshot_is_served(start_dashboard, sample, hub):
    dash = start_dashboard(hub_path=hub)
    name = dash.get(f"/api/runs/{sample}/main").json()["screenshots"][0]
    r = dash.get(f"/api/screenshots/{name}")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert r.content == (screenshots_root(hub) / name).read_bytes() and r.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert r.headers["X-Content-Type-Options"] == "nosniff" and "max-age" in r.headers["Cache-Control"]
    sha64 = "ab" * 32
    (screenshots_root(hub) / f"{sha64}.png").write_bytes(sample_data.png())
    assert dash.get(f"/api/screenshots/{sha64}.png").status_code == 200  # a sha-256 repository's commit id


def test_only_a_kept_screenshot_by_its_sha_is_served(start_dashboard, sample, hub):
    dash = start_dashboard(hub_path=hub)
    root = screenshots_root(hub)
    sha = sample_data.MAIN_SHAS[-1]
    (hub.parent / "x.png").write_bytes(sample_data.png())  # beside the screenshots directory
    (root / "notes.png").write_bytes(sample_data.png())
    (root / f"{'e' * 40}.png").write_text("<script>alert(1)</script>")  # not a PNG
    (root / f"{'d' * 40}.png").symlink_to(hub.parent / "x.png")  # a link out of the directory
    (root / f"{'c' * 40}.png").mkdir()
    mixed = "ab" * 20
    (root / f"{mixed}.png").write_bytes(sample_data.png())
    assert dash.get(f"/api/screenshots/{mixed}.png").status_code == 200
    refused = ["..%2Fx.png", "%2e%2e%2fx.png", "..", "notes.png", f"{mixed.upper()}.png", sha, f"{sha}.PNG",
               f"{sha}.png.bak", f"{sha[:39]}.png", f"{'e' * 40}.png", f"{'d' * 40}.png", f"{'c' * 40}.png",
               f"{'0' * 40}.png", f"{sha}.png%00", f"..%2F..%2Fvar%2F{sha}.png"]
    for name in refused:
        r = dash.get(f"/api/screenshots/{name}")
        assert r.status_code == 404 and "error" in r.json(), (name, r.status_code)
    port = dash.server.server_address[1]
    for raw in ("/api/screenshots/../x.png", "/api/screenshots/../../x.png", f"/api/screenshots/x/../{sha}.png",
                "/api/screenshots/", "/api/screenshots//etc/passwd"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", raw)  # sent as it is: no client-side dot-segment removal
        reply = conn.getresponse()
        assert reply.status == 404 and reply.getheader("Content-Type") == "application/json", raw
        conn.close()
    assert dash.get(f"/api/screenshots/{sha}.png").status_code == 200


def test_screenshots_off_loopback_need_the_token(start_dashboard, sample, hub, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    dash = start_dashboard(bind="0.0.0.0", hub_path=hub)
    name = sample_data.SHOTS[-1]
    for path in (f"/api/screenshots/{name}", f"/api/runs/{sample}/main"):
        assert dash.get(path).status_code == 401, path
        assert dash.get(path, headers=BEARER).status_code == 200, path
    assert dash.get(f"/api/screenshots/{name}", headers={"Host": "evil.example", **BEARER}).status_code == 403


def _reconcile_ticks(redis_client) -> list[dict]:
    """The kwargs of each reconcile tick waiting on the reconcile queue (newest first, as kombu pushes them)."""
    found = []
    for key in queue_keys("reconcile"):
        for raw in redis_client.lrange(key, 0, -1):
            msg = json.loads(raw)
            if msg["headers"]["task"] == RECONCILE_TICK:
                body = msg["body"]
                if msg["properties"].get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                found.append(json.loads(body)[1])
    return found


def test_reconcile_sends_the_tick(dash, redis_client):
    r = dash.post("/api/reconcile", {"force": True})
    assert r.status_code == 202 and r.json() == {"requested": "reconcile", "force": True}
    assert _reconcile_ticks(redis_client) == [{"force": True}]
    assert dash.post("/api/reconcile").status_code == 202  # no body: not forced
    assert sorted(t["force"] for t in _reconcile_ticks(redis_client)) == [False, True]
    for bad in ({"force": "yes"}, {"force": 1}):
        r = dash.post("/api/reconcile", bad)
        assert r.status_code == 400 and "force" in r.json()["error"]
    assert len(_reconcile_ticks(redis_client)) == 2
    assert dash.get("/api/reconcile").status_code == 405


def test_reconcile_is_steering(start_dashboard, redis_client, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    dash = start_dashboard()
    assert dash.post("/api/reconcile", {"force": True}).status_code == 401
    assert dash.post("/api/reconcile", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert dash.post("/api/reconcile", headers={"Origin": "http://evil.example", **BEARER}).status_code == 403
    assert dash.post("/api/reconcile", headers={"Host": "evil.example", **BEARER}).status_code == 403
    plain = dash.post("/api/reconcile", headers={"Content-Type": "text/plain", **BEARER})
    assert plain.status_code == 415
    assert _reconcile_ticks(redis_client) == []
    assert dash.post("/api/reconcile", headers={"Origin": dash.base, **BEARER}).status_code == 202
    assert _reconcile_ticks(redis_client) == [{"force": False}]
    monkeypatch.delenv(TOKEN_ENV)
    off = start_dashboard()
    off.server.app.host = "10.1.2.3"  # as if bound to a LAN address without a token (make_server refuses that)
    r = off.post("/api/reconcile")
    assert r.status_code == 403 and TOKEN_ENV in r.json()["error"]
    assert len(_reconcile_ticks(redis_client)) == 1


def test_reconcile_with_the_broker_down_is_503(dash, monkeypatch):
    def down(*, force: bool = False) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(steering, "request_reconcile", down)
    r = dash.post("/api/reconcile", {"force": True})
    assert r.status_code == 503 and "not requested" in r.json()["error"] and "6379" not in r.text
