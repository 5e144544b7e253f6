"""The preview over HTTP: /preview/<sha>/ serves a kept dist/ with the headers that box it in, refuses every path
that is not a plain file of it, and follows the API's Host and token rules; /api/previews lists the kept ones."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from agentswarm.dashboard.app import TOKEN_ENV
from agentswarm.dashboard.preview import CSP
from agentswarm.reconcile.previews import keep_preview, previews_root, stage_dist

SHA = "ab" * 20
OTHER = "cd" * 20
TOKEN = "preview-test-token-77"


def build(root: Path, files: dict[str, bytes | str]) -> Path:
    """A sandbox workdir whose repo/dist holds `files`."""
    for rel, data in files.items():
        path = root / "repo" / "dist" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def keep(hub: Path, sha: str, files: dict[str, bytes | str], tmp: Path, keep_n: int = 5) -> None:
    """Copy a built dist into the preview store the way the reconciler does."""
    work = build(tmp / f"work-{sha[:6]}", files)
    root = previews_root(hub)
    keep_preview(root, sha, stage_dist(work, "repo/dist", root, max_bytes=1 << 20), keep_n)


GAME = {"index.html": '<!doctype html><canvas id="game"></canvas><script type="module" src="./assets/a-1.js"></script>',
        "assets/a-1.js": "document.body.dataset.status = 'ok';\n", "assets/a-1.js.map": "{}",
        "assets/tex.png": b"\x89PNG\r\n\x1a\n", "assets/x.unknownext": b"?"}


@pytest.fixture
def served(start_dashboard, tmp_path):
    hub = tmp_path / "var" / "hub.git"
    keep(hub, SHA, GAME, tmp_path)
    return start_dashboard(hub_path=hub)


def raw_get(dash, path: str, host: str | None = None) -> http.client.HTTPResponse:
    """A GET with the path sent exactly as written (requests would normalise `..` and escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", dash.server.server_address[1], timeout=10)
    conn.putrequest("GET", path, skip_host=host is not None)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    res = conn.getresponse()
    res.read()
    return res


def test_files_are_served_with_their_types_and_the_boxing_headers(served):
    res = served.get(f"/preview/{SHA}/")
    assert res.status_code == 200 and res.text.startswith("<!doctype html>")
    assert res.headers["Content-Type"] == "text/html; charset=utf-8"
    assert res.headers["Content-Security-Policy"] == CSP
    assert CSP.startswith("sandbox allow-scripts;") and "connect-src 'none'" in CSP and "allow-same-origin" not in CSP
    assert res.headers["X-Content-Type-Options"] == "nosniff" and res.headers["Access-Control-Allow-Origin"] == "*"
    types = {p: served.get(f"/preview/{SHA}/{p}").headers["Content-Type"] for p in GAME}
    assert types == {"index.html": "text/html; charset=utf-8", "assets/a-1.js": "text/javascript; charset=utf-8",
                     "assets/a-1.js.map": "application/json", "assets/tex.png": "image/png",
                     "assets/x.unknownext": "application/octet-stream"}
    redirect = served.get(f"/preview/{SHA}", allow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["Location"] == f"/preview/{SHA}/"
    api = served.get("/api/summary")
    assert "Access-Control-Allow-Origin" not in api.headers and "sandbox" not in api.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", [
    f"/preview/{SHA}/../../../etc/passwd", f"/preview/{SHA}/assets/../index.html", f"/preview/{SHA}/%2e%2e/x",
    f"/preview/{SHA}/..%2f..%2fhub.git/HEAD", f"/preview/{SHA}//etc/passwd", f"/preview/{SHA}/.hidden",
    f"/preview/{SHA}/assets", f"/preview/{SHA}/nothing.js", f"/preview/{SHA}/index.html/", f"/preview/{SHA}/a\\b",
    f"/preview/{OTHER}/", f"/preview/{SHA[:12]}/", "/preview/../api/summary", f"/preview/{SHA}/../preview.json",
    f"/preview/{SHA}.{'0' * 32}/index.html",
])
def test_anything_but_a_plain_file_of_a_kept_preview_is_404(served, path):
    assert raw_get(served, path).status == 404, path


def test_a_preview_answers_only_to_an_allowed_host(served):
    assert raw_get(served, f"/preview/{SHA}/", host="evil.example").status == 403
    assert raw_get(served, f"/preview/{SHA}/", host=f"127.0.0.1:{served.server.server_address[1]}").status == 200


def test_off_loopback_a_preview_needs_the_token_or_its_key(start_dashboard, tmp_path, monkeypatch):
    hub = tmp_path / "var" / "hub.git"
    keep(hub, SHA, GAME, tmp_path)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    dash = start_dashboard(bind="0.0.0.0", hub_path=hub)
    assert dash.get(f"/preview/{SHA}/").status_code == 401
    assert dash.get("/api/previews").status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    listed = dash.get("/api/previews", headers=auth).json()["previews"]
    url = listed[0]["url"]
    assert url.startswith(f"/preview/{SHA}.") and url.endswith("/") and TOKEN not in url
    assert dash.get(url).status_code == 200  # the key stands for the token (an iframe cannot send one)...
    assert dash.get(url + "assets/a-1.js").status_code == 200  # ...for the game's files too
    assert dash.get(f"/preview/{SHA}/", headers=auth).status_code == 200
    other_key = url.split(".")[1].rstrip("/")
    keep(hub, OTHER, GAME, tmp_path)
    assert dash.get(f"/preview/{OTHER}.{other_key}/").status_code == 404  # a key opens its own sha only


def test_the_list_is_newest_first_with_sha_time_url_and_screenshot(start_dashboard, tmp_path):
    hub = tmp_path / "var" / "hub.git"
    shas = [f"{i:02x}" * 20 for i in range(4)]
    for sha in shas:
        keep(hub, sha, GAME, tmp_path, keep_n=3)
    shots = hub.parent / "screenshots"
    shots.mkdir()
    (shots / f"{shas[-1]}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    dash = start_dashboard(hub_path=hub, reconcile_previews_keep=3)
    listed = dash.get("/api/previews").json()
    assert listed["keep"] == 3
    assert [p["sha"] for p in listed["previews"]] == shas[::-1][:3]  # the oldest was pruned
    newest = listed["previews"][0]
    assert newest["url"] == f"/preview/{shas[-1]}/" and newest["screenshot"] == f"{shas[-1]}.png"
    assert newest["files"] == len(GAME) and newest["bytes"] > 0 and newest["at"]
    assert listed["previews"][1]["screenshot"] is None
    assert dash.get(f"/preview/{shas[0]}/").status_code == 404
