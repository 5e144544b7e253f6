"""End to end: a demo run on VoxelCraft lands features, the reconciler builds green main and keeps its dist/,
and the dashboard's preview iframe loads that build and draws on its canvas.

The real stack (Celery workers for work, merge and reconcile, Postgres, Redis, the hub, bubblewrap sandboxes,
the simulator as the model, `npm ci` into the shared cache); the dashboard in this process; the page in
headless Chromium driven over the DevTools protocol, so the cross-origin iframe is read from its pixels.

With AGENTSWARM_DASHBOARD_SHOT=<path.png> it also saves a screenshot of the whole dashboard, taken at that
moment of the run (how docs/dashboard.png was made).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from agentswarm.config import load_settings
from agentswarm.dashboard import make_server
from agentswarm.db import session_scope
from agentswarm.db.models import MainCheck
from agentswarm.queue.names import RECONCILE_TICK
from agentswarm.queue.send import send_tick
from agentswarm.reconcile.previews import list_previews, preview_files, previews_root
from tests.dashboard.cdp import CHROMIUM, browse
from tests.e2e.voxelcraft import GATE_INSTALL, beat, feature, git, start_workers
from tests.support.waiting import wait_for
from tests.target.test_stub_app import PAGE_BACKGROUND, read_png

pytestmark = [pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm (nodejs, npm)"),
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed"),
              pytest.mark.bwrap, pytest.mark.browser]

BLANK = {PAGE_BACKGROUND, (0, 0, 0), (255, 255, 255)}  # the page's own colour, an unpainted canvas, no page


def _painted(png: bytes, tmp_path: Path) -> tuple[float, set]:
    """The share of sampled pixels that are none of the blank colours, and the colours seen."""
    path = tmp_path / "frame.png"
    path.write_bytes(png)
    width, height, rows = read_png(path)
    samples = [tuple(row[x:x + 3]) for row in rows[4:height - 4:6] for x in range(16, (width - 4) * 4, 24)]
    painted = [p for p in samples if all(max(abs(a - b) for a, b in zip(p, blank, strict=True)) > 8 for blank in BLANK)]
    return len(painted) / max(1, len(samples)), set(samples[::25])


def test_the_preview_iframe_loads_the_game_a_demo_run_built(gated, db, celery_worker, tmp_path):
    shot_to = os.environ.get("AGENTSWARM_DASHBOARD_SHOT")
    names = ["alpha", "beta", "gamma", "delta"] + (["epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda",
                                                    "mu", "nu", "xi"] if shot_to else [])  # a run still busy
    features = [{**feature(f"p-{i + 1:03d}", name), "dependencies": [f"p-{i:03d}"] if i >= 3 else []}
                for i, name in enumerate(names)]
    env, hub, _ = gated(features, GATE_PRESUBMIT="off", GATE_FULL_COMMANDS="[]",
                        GATE_COMMANDS=json.dumps(["node_modules/.bin/tsc --noEmit"]),
                        RECONCILE_INSTALL=GATE_INSTALL, RECONCILE_TIMEOUT_S="300", RECONCILE_PREVIEWS_KEEP="3")
    start_workers(celery_worker, env)
    celery_worker(queues="reconcile", pool="solo", env=env)
    start = git(hub, "rev-parse", "main")
    root = previews_root(hub)
    asked = {"main": start}

    def tick() -> None:  # beat's stand-in: plan and monitor, and a reconcile tick each time main moves
        beat()
        now = git(hub, "rev-parse", "main")
        if now != asked["main"]:
            asked["main"] = now
            send_tick(RECONCILE_TICK)

    wanted = 2 if shot_to else 1  # the screenshot's strip shows more than one
    kept = wait_for(lambda: len(list_previews(root, None)) >= wanted and list_previews(root, None), timeout=900,
                    every=1.0, tick=tick)
    sha = kept[0]["sha"]
    with session_scope(db) as s:
        check = s.scalars(select(MainCheck).where(MainCheck.sha == sha)).one()
        assert check.result == "green" and check.screenshot == f"{sha}.png"
        assert any(c["kind"] == "page" and c["exit_code"] == 0 for c in check.checks)
    dist = preview_files(root, sha)
    assert dist is not None and (dist / "index.html").is_file() and list((dist / "assets").glob("*.js"))
    assert not [p for p in dist.rglob("*") if p.is_symlink()]

    server = make_server("127.0.0.1", 0, load_settings(database_url=db))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    async def script(page):
        await page.wait("document.body && document.body.dataset.ready === '1' "
                        "&& !!document.getElementById('preview-frame')", timeout=30)
        src = await page.js("document.getElementById('preview-frame').getAttribute('src')")
        share, colours = 0.0, set()
        for _ in range(60):  # the game boots, then clears its canvas every frame
            share, colours = _painted(await page.shot("#preview-frame"), tmp_path)
            if share > 0.9:
                break
            await page.js("new Promise((r) => setTimeout(r, 250))")
        full = None
        if shot_to:
            await page.js("new Promise((r) => setTimeout(r, 2500))")  # the strip's images and the event feed
            full = await page.call("Page.captureScreenshot", format="png")
        return src, share, colours, full

    try:
        (src, share, colours, full), log = browse(tmp_path, base + "/", script, width=1400, height=1100)
    finally:
        server.shutdown()
        server.server_close()
    assert src in {f"/preview/{p['sha']}/" for p in list_previews(root, None)}  # the newest when the page loaded
    assert share > 0.9, f"the iframe's canvas is blank ({share:.0%} painted, colours {colours})\n{log[-3000:]}"
    if shot_to and full:
        import base64

        Path(shot_to).write_bytes(base64.b64decode(full["data"]))
