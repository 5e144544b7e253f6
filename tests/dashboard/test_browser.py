"""The page in headless Chromium: it loads, polls, renders the sample run, and logs no console errors."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from agentswarm.reconcile.page import screenshots_root
from tests.dashboard.sample import MAIN_SHAS, SHOTS, write_screenshots

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")]


def _dump(url: str, tmp_path) -> tuple[str, str]:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "--virtual-time-budget=5000",
         "--disable-background-networking", "--enable-logging=stderr", "--v=0", "--window-size=1400,900",
         f"--user-data-dir={tmp_path / 'profile'}", url],
        capture_output=True, text=True, timeout=60)
    return proc.stdout, proc.stderr


def test_page_renders_the_sample_run(start_dashboard, sample, tmp_path):
    hub = tmp_path / "var" / "hub.git"
    write_screenshots(screenshots_root(hub))
    dash = start_dashboard(gate="batch", hub_path=hub)
    task = dash.get("/api/tasks?status=complete&limit=1").json()["tasks"][0]["id"]
    dom, log = _dump(f"{dash.base}/#task={task}", tmp_path)
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ready="1"' in body, log[-2000:]
    assert "data-error" not in body and "data-pwned" not in body
    assert not [line for line in log.splitlines() if "CONSOLE" in line]  # no errors, no CSP violations
    assert sample in dom and 'class="tile running"' in dom and "merge.conflict" in dom
    assert re.search(r'<button id="btn-pause" type="button">Pause</button>', dom)  # the run is not paused
    assert '>retry</button>' in dom  # on the blocked task's row
    assert "&lt;img src=x onerror=" in dom and "<img src=x" not in dom  # model output shown as text
    imgs = re.findall(r"<img [^>]*>", dom)  # the only images: the screenshots of green mains
    assert imgs and all(re.search(r'src="/api/screenshots/[0-9a-f]{40}\.png"', i) for i in imgs), imgs
    panel = re.search(r'<section class="panel" id="main-panel">(.*?)</section>', dom, re.S).group(1)
    assert '<span class="badge s-green" id="main-badge">green</span>' in panel and MAIN_SHAS[-1][:10] in panel
    assert re.search(rf'<img class="shot-img"[^>]*src="/api/screenshots/{SHOTS[-1]}"', panel), panel[-3000:]
    assert f'<span class="mono" id="shot-sha">{MAIN_SHAS[-1]}</span>' in panel
    assert panel.count('<img class="thumb') == len(SHOTS) and "3/5 shas green" in panel
    assert "src/ui/hud.test.ts &gt; hud &gt; &lt;img src=x onerror=" in panel  # a quarantined test, as text
    assert 'class="assistant"' in dom and "5,210 → 96 tokens" in dom  # transcript replay of the task
    gate = re.search(r'<div class="card gate" id="gate-card"[^>]*>(.*?)</div></div>', dom, re.S)
    assert gate, dom[:3000]
    green = dash.get("/api/summary").json()["gate"]["last_green"][:10]
    assert ">batch<" in gate.group(1) and 'id="gate-testing"' in gate.group(1)
    assert "testing b7e1c0… · 4 branches · bisect 2/4" in gate.group(1) and green in gate.group(1)
    assert "3/7 red batches · 3 culprits" in gate.group(1)
    culprits = re.search(r'<ol id="culprits"[^>]*>(.*?)</ol>', dom, re.S).group(1)
    assert culprits.count('<li class="rejected">') == 3 and "clashes with task " in culprits
    assert "test: src/world/mesh.test.ts &gt; mesh &gt; &lt;img src=x onerror=" in culprits  # escaped, as text
    assert "rejected by gate: " in re.search(r'<ol id="merges"[^>]*>(.*?)</ol>', dom, re.S).group(1)


def test_page_without_a_run(dash, tmp_path):
    dom, log = _dump(dash.base + "/", tmp_path)
    assert 'data-ready="1"' in re.search(r"<body[^>]*>", dom).group(0), log[-2000:]
    assert "no run yet" in dom and not [line for line in log.splitlines() if "CONSOLE" in line]
    assert "<img" not in dom
