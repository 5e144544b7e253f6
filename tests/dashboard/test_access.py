"""Who may reach the dashboard: the Host check in every binding mode, the token for reads off loopback,
the refusal to start off loopback without a token, AGENTSWARM_DASHBOARD_HOSTS, and the read timeout.

"Off loopback" is a server bound to 0.0.0.0, reached through 127.0.0.1 with a chosen Host header.
"""

from __future__ import annotations

import socket
import time

import pytest
import requests

from agentswarm.config import get_settings, load_settings
from agentswarm.dashboard import make_server
from agentswarm.dashboard.app import HOSTS_ENV, TOKEN_ENV
from agentswarm.dashboard.server import HOST_REFUSED
from agentswarm.db.models import Run
from agentswarm.db.session import session_scope
from agentswarm.errors import ConfigError
from agentswarm.ops.cli import main

TOKEN = "tok-access-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}

MODES = {
    "loopback": {"bind": "127.0.0.1", "token": ""},
    "loopback-token": {"bind": "127.0.0.1", "token": TOKEN},
    "any-address-token-hosts": {"bind": "0.0.0.0", "token": TOKEN, "dashboard_hosts": "dash.example.com"},
}


def _start(start_dashboard, monkeypatch, mode: str):
    conf = dict(MODES[mode])
    if conf.pop("token"):
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return start_dashboard(**conf)


def _task_with_transcript(dash) -> str:
    return dash.get("/api/tasks?status=complete&limit=1", headers=BEARER).json()["tasks"][0]["id"]


def _spoofed(port: int) -> list[str]:
    return ["evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", f"localhost:{port + 1}",
            f"dash.example.com:{port + 1}", f"evil.example@localhost:{port}", "", "0.0.0.0"]


@pytest.mark.parametrize("mode", list(MODES))
def test_a_spoofed_host_is_refused_on_every_route(start_dashboard, sample, db, monkeypatch, mode):
    dash = _start(start_dashboard, monkeypatch, mode)
    port = dash.server.server_address[1]
    task = _task_with_transcript(dash)
    for host in _spoofed(port):
        for path in ("/api/summary", f"/api/tasks/{task}/transcript", "/", "/static/app.js"):
            r = dash.get(path, headers={"Host": host, **BEARER})
            assert r.status_code == 403 and r.json() == {"error": HOST_REFUSED}, (host, path, r.text)
        # what a rebinding page would send: its own name as Host and Origin, JSON, even the token
        r = dash.post(f"/api/runs/{sample}/stop", headers={"Host": host, "Origin": f"http://{host}", **BEARER})
        assert r.status_code == 403 and r.json() == {"error": HOST_REFUSED}, (host, r.text)
    with session_scope(db) as s:
        assert s.get(Run, sample).status == "active"
    for host in (f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}", f"[::1]:{port}"):
        for path in ("/api/summary", f"/api/tasks/{task}/transcript", "/"):
            assert dash.get(path, headers={"Host": host, **BEARER}).status_code == 200, (host, path)
    ok = dash.post(f"/api/runs/{sample}/stop", headers={"Host": f"localhost:{port}", **BEARER})
    assert ok.status_code == 200, ok.text


def test_a_listed_host_is_accepted_off_loopback(start_dashboard, sample, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    dash = start_dashboard(bind="0.0.0.0", dashboard_hosts="dash.example.com, 10.9.8.7:9000")
    port = dash.server.server_address[1]
    for host in ("dash.example.com", f"Dash.Example.com:{port}", "10.9.8.7:9000"):
        assert dash.get("/api/summary", headers={"Host": host, **BEARER}).status_code == 200, host
        assert dash.get("/", headers={"Host": host}).status_code == 200, host
    assert dash.get("/api/summary", headers={"Host": f"10.9.8.7:{port}", **BEARER}).status_code == 403
    assert dash.get("/api/summary", headers={"Host": "10.9.8.7", **BEARER}).status_code == 403
    cross = dash.post(f"/api/runs/{sample}/stop", headers={"Host": "dash.example.com",
                                                           "Origin": "http://other.example", **BEARER})
    assert cross.status_code == 403 and "cross-origin" in cross.json()["error"]  # the Origin check still holds
    ok = dash.post(f"/api/runs/{sample}/stop", headers={"Host": "dash.example.com",
                                                        "Origin": "http://dash.example.com", **BEARER})
    assert ok.status_code == 200, ok.text


def test_listed_hosts_are_ignored_on_a_loopback_bind(start_dashboard):
    dash = start_dashboard(dashboard_hosts="dash.example.com")
    r = dash.get("/api/summary", headers={"Host": "dash.example.com"})
    assert r.status_code == 403 and r.json() == {"error": HOST_REFUSED}


def test_reads_off_loopback_need_the_token(start_dashboard, sample, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    dash = start_dashboard(bind="0.0.0.0")
    task = _task_with_transcript(dash)
    for path in ("/api/summary", "/api/tasks", f"/api/tasks/{task}", f"/api/tasks/{task}/transcript",
                 "/api/events", "/api/merges"):
        missing = dash.get(path)
        assert missing.status_code == 401 and TOKEN_ENV in missing.json()["error"], path
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert dash.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401, path
        assert dash.get(path, headers=BEARER).status_code == 200, path
    for path in ("/", "/static/app.js"):  # the page holds no data; it asks for the token once per tab
        assert dash.get(path).status_code == 200
    assert dash.post(f"/api/runs/{sample}/stop").status_code == 401
    assert dash.post(f"/api/runs/{sample}/stop", headers=BEARER).status_code == 200


def test_reads_on_loopback_need_no_token_even_when_one_is_set(start_dashboard, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    dash = start_dashboard()
    body = dash.get("/api/summary").json()
    assert body["config"]["token_required"] is True and body["config"]["steering"] is True


def test_page_sends_the_token_with_every_read(dash):
    js = dash.get("/static/app.js").text
    api_fn = js[js.index("async function api("):js.index("const withRun")]
    assert 'Authorization = "Bearer "' in api_fn and "res.status === 401" in api_fn and "askToken()" in api_fn
    assert "sessionStorage" in js


def test_no_token_off_loopback_refuses_to_start(db, monkeypatch, capsys):
    settings = load_settings(database_url=db)
    with pytest.raises(ConfigError) as exc:
        make_server("0.0.0.0", 0, settings)
    assert TOKEN_ENV in str(exc.value) and "\n" not in str(exc.value)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["dashboard", "--host", "0.0.0.0", "--port", "0"])
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and TOKEN_ENV in err, err


@pytest.mark.parametrize("bad", ["http://dash.example.com", "dash.example.com/path", "*", "*.example.com",
                                 "0.0.0.0", "[::]", "dash.example.com:http", "dash.example.com:99999",
                                 "user@dash.example.com", "dash example.com", "ok.example.com,https://x.example"])
def test_bad_dashboard_hosts_are_refused_at_start(bad, monkeypatch, capsys):
    monkeypatch.setenv(HOSTS_ENV, bad)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    line = str(exc.value)
    assert line.startswith(f"{HOSTS_ENV}: ") and "\n" not in line, line
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["dashboard", "--port", "0"])
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and HOSTS_ENV in err, err


def test_dashboard_hosts_are_normalized(monkeypatch):
    monkeypatch.setenv(HOSTS_ENV, " Dash.Example.com , 10.0.0.5:8443,,[FE80::1]:8080 ")
    assert load_settings().dashboard_hosts == ("dash.example.com", "10.0.0.5:8443", "[fe80::1]:8080")
    monkeypatch.delenv(HOSTS_ENV)
    assert load_settings().dashboard_hosts == ()


def test_a_silent_connection_is_closed_by_the_read_timeout(start_dashboard):
    dash = start_dashboard(read_timeout=0.5)
    port = dash.server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, nothing sent
        assert time.monotonic() - started < 5
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # headers, then no body
        sock.sendall(f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100\r\n\r\n{".encode())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.0 408") and b"did not arrive in time" in reply, reply[:300]
    assert requests.get(dash.base + "/api/summary", timeout=10).status_code == 200  # the server still answers
