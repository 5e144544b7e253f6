"""Tests never read the user's `var/`: the browser tests pass beside a swarm's populated var/.

A `make swarm` in the same clone leaves var/previews (built games, which log to the console when
embedded) and var/screenshots. Run the browser tests that once served them, from a directory whose
var/ is populated like that and with no HUB_PATH or SANDBOX_ROOT of the caller's, so only the
session's own defaults (tests/conftest.py) can keep them away from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentswarm.reconcile.page import screenshots_root
from agentswarm.reconcile.previews import keep_preview, list_previews, previews_root
from tests.dashboard.sample import MAIN_SHAS, write_screenshots
from tests.dashboard.test_browser import CHROMIUM

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")]
TESTS = ["tests/dashboard/test_browser.py::test_page_without_a_run",
         "tests/dashboard/test_history_browser.py::test_the_charts_render_a_runs_history",
         "tests/dashboard/test_live_transcript.py::test_the_page_says_the_transcript_is_live"]
GAME = """<!doctype html><html><body><canvas id="c"></canvas>
<script>console.error("the user's own game is running"); console.log("frame");</script></body></html>"""


def _populate(var: Path) -> None:
    """var/ as a demo swarm leaves it: a kept preview of a green main and the reconciler's screenshots."""
    hub = var / "hub.git"
    root = previews_root(hub)
    staged = root / ".staging-test"
    (staged / "dist").mkdir(parents=True)
    (staged / "dist" / "index.html").write_text(GAME)
    keep_preview(root, MAIN_SHAS[-1], staged, keep=5)
    write_screenshots(screenshots_root(hub))
    assert list_previews(root, None)


def test_the_browser_tests_pass_beside_a_populated_var(tmp_path):
    _populate(tmp_path / "var")
    env = {k: v for k, v in os.environ.items() if k not in ("HUB_PATH", "SANDBOX_ROOT", "PYTEST_ADDOPTS")}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
                          *[str(ROOT / t) for t in TESTS]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout, out.stdout[-2000:]
