"""The preview in headless Chromium: a hostile build in the dashboard's iframe runs, but cannot call the API, read
the dashboard page or its token, or keep anything; opened on its own it is just as boxed in."""

from __future__ import annotations

import logging
import re

import pytest

from tests.dashboard.cdp import CHROMIUM, browse
from tests.dashboard.test_preview import keep
from tests.target.test_stub_app import read_png

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")]

SHA = "e5" * 20
TOKEN_KEY = "agentswarm-token"
# Everything a page could try against the dashboard that served it; the verdict goes on <body data-result> and
# paints the page green (contained) or red (escaped), so a screenshot of the iframe tells which.
EVIL = """
const tries = [];
async function attempt(name, call) {
  try { const res = await call(); tries.push(`${name}:read:${(await res.text()).length}`); }
  catch (err) { tries.push(`${name}:blocked`); }
}
await attempt("fetch", () => fetch("/api/summary?from=preview"));
await attempt("fetch-origin", () => fetch(new URL("/api/summary?from=preview", location.href).href));
await attempt("post", () => fetch("/api/runs/x/stop?from=preview", { method: "POST", body: "{}",
  headers: { "Content-Type": "application/json" } }));
await attempt("xhr", () => new Promise((ok, bad) => {
  const x = new XMLHttpRequest();
  x.open("GET", "/api/tasks?from=preview");
  x.onload = () => ok({ text: async () => x.responseText });
  x.onerror = () => bad(new Error("xhr"));
  try { x.send(); } catch (err) { bad(err); }
}));
let parentPage = "blocked";
try { parentPage = `read:${parent.document.body.dataset.ready}:${parent.sessionStorage.getItem("%TOKEN_KEY%")}`; } catch (err) {}
if (parent === window) parentPage = "top";
let storage = "blocked";
try { localStorage.setItem("k", "1"); storage = "open"; } catch (err) {}
const contained = tries.every((t) => t.endsWith(":blocked")) && parentPage !== "read" && storage === "blocked";
document.body.dataset.result = `${contained ? "contained" : "ESCAPED"} ${tries.join(" ")} parent:${parentPage} storage:${storage}`;
document.documentElement.style.background = contained ? "#00ff00" : "#ff0000";
""".replace("%TOKEN_KEY%", TOKEN_KEY)
HOSTILE = {"index.html": '<!doctype html><html><body data-result="pending">'
                         '<script type="module" src="./assets/evil-1a.js"></script></body></html>',
           "assets/evil-1a.js": EVIL}


def _result(dom: str) -> str:
    found = re.search(r'data-result="([^"]*)"', dom)
    return found.group(1) if found else "no body"


def _colour(png: bytes, tmp_path) -> set[tuple[int, ...]]:
    path = tmp_path / f"shot-{len(png)}.png"
    path.write_bytes(png)
    width, height, rows = read_png(path)
    inner = rows[4:height - 4]
    return {tuple(row[x:x + 3]) for row in inner[::7] for x in range(16, (width - 4) * 4, 28)}


def test_a_hostile_build_in_the_iframe_cannot_reach_the_dashboard(start_dashboard, sample, tmp_path, caplog):
    hub = tmp_path / "var" / "hub.git"
    keep(hub, SHA, HOSTILE, tmp_path)
    dash = start_dashboard(hub_path=hub)
    caplog.set_level(logging.DEBUG, logger="agentswarm.dashboard")

    async def script(page):
        await page.wait("document.readyState === 'complete' && location.pathname === '/'")
        await page.js(f"sessionStorage.setItem({TOKEN_KEY!r}, 'the-dashboard-token')")
        await page.call("Page.reload")
        await page.wait("document.body.dataset.ready === '1' && !!document.getElementById('preview-frame')")
        frame = await page.js("(() => { const f = document.getElementById('preview-frame');"
                              " return [f.getAttribute('sandbox'), f.getAttribute('src')]; })()")
        for _ in range(50):  # the frame is cross-origin to the page: its verdict is read from its pixels
            colours = _colour(await page.shot("#preview-frame"), tmp_path)
            if colours in ({(0, 255, 0)}, {(255, 0, 0)}):
                break
            await page.js("new Promise((r) => setTimeout(r, 200))")
        caption = await page.js("document.getElementById('preview-sha').textContent")
        strip = await page.js("document.getElementById('preview-strip').textContent")
        return frame, colours, caption, strip

    (frame, colours, caption, strip), log = browse(tmp_path, dash.base + "/", script)
    assert frame == ["allow-scripts", f"/preview/{SHA}/"]
    assert colours == {(0, 255, 0)}, f"the build escaped or never ran: {colours}\n{log[-3000:]}"
    assert caption == SHA and SHA[:10] in strip
    sent = [r.getMessage() for r in caplog.records if "from=preview" in r.getMessage()]
    assert sent == [], sent  # blocked before sending (connect-src 'none'), not merely unreadable
    assert "Refused to connect" in log  # the CSP, reported in the console


def test_a_hostile_build_opened_on_its_own_is_boxed_in_too(start_dashboard, tmp_path, caplog):
    hub = tmp_path / "var" / "hub.git"
    keep(hub, SHA, HOSTILE, tmp_path)
    dash = start_dashboard(hub_path=hub)
    caplog.set_level(logging.DEBUG, logger="agentswarm.dashboard")

    async def script(page):
        await page.wait("document.body && document.body.dataset.result !== 'pending'", timeout=20)
        return await page.js("document.body.dataset.result + ' origin:' + self.origin")

    result, log = browse(tmp_path, f"{dash.base}/preview/{SHA}/", script)
    assert result.startswith("contained ") and result.endswith("origin:null"), result  # an opaque origin
    assert "fetch:blocked fetch-origin:blocked post:blocked xhr:blocked" in result
    assert not [r for r in caplog.records if "from=preview" in r.getMessage()]
