"""`agentswarm check` and `make swarm` say what the reconciler checks main with, and name what is missing."""

from __future__ import annotations

from agentswarm.config import load_settings
from agentswarm.ops import services
from agentswarm.ops.services import check_reconciler


def test_names_the_commands_the_page_and_what_happens_on_red(monkeypatch):
    monkeypatch.setattr(services.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    line = check_reconciler(load_settings(reconcile_commands=["npx tsc --noEmit"], reconcile_interval_s=60))
    assert line == "npx tsc --noEmit + the page in headless Chromium, every 60s; red: revert"


def test_a_missing_tool_is_named_with_its_package_and_is_not_fatal(monkeypatch):
    monkeypatch.setattr(services.shutil, "which", lambda tool: None)
    line = check_reconciler(load_settings(reconcile_commands=["npx tsc --noEmit"], reconcile_on_red="fix"))
    assert "red: fix" in line and "MISSING npm (Debian: apt-get install nodejs npm), npx" in line
    assert "chromium for the page check (Debian: apt-get install chromium)" in line


def test_no_commands_means_main_is_never_checked():
    assert "never checked" in check_reconciler(load_settings(reconcile_commands=[]))
