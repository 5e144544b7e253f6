"""The reconcile tick keeps a green main's dist/ as its preview: built and loaded in a real check sandbox (bubblewrap,
headless Chromium), copied out before the sandbox goes; a build that plants a link is checked green but not kept."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from agentswarm.config import load_settings
from agentswarm.db import Event, Run, session_scope
from agentswarm.reconcile.previews import list_previews, preview_files, previews_root
from agentswarm.reconcile.tick import reconcile_tick
from tests.reconcile.hubs import make_hub

pytestmark = [pytest.mark.bwrap, pytest.mark.browser,
              pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed")]

PAGE = '<!doctype html><html><head><link rel="stylesheet" href="./assets/s.css"></head><body data-status="ok"></body></html>'
BUILD = ("mkdir -p dist/assets && printf '%s' '" + PAGE + "' > dist/index.html && "
         "printf 'body { background: #336699; }' > dist/assets/s.css")


def _tick(db, tmp_path, build: str) -> tuple[dict, list[dict], list[dict], list[str]]:
    hub = make_hub(tmp_path, {"build.sh": build + "\n"})
    with session_scope(db) as s:
        s.add(Run(max_tasks=100, max_tokens=10**7, max_dollars=10.0))
    settings = load_settings(hub_path=hub, sandbox_root=tmp_path / "sandboxes", llm_base_url="http://127.0.0.1:9",
                             reconcile_install="", reconcile_commands=["sh build.sh"], reconcile_page=True,
                             reconcile_timeout_s=120)
    out = reconcile_tick(settings)
    with session_scope(db) as s:
        green = [e.data for e in s.scalars(select(Event).where(Event.kind == "reconcile.green"))]
    root = previews_root(hub)
    return out, green, list_previews(root, None), sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_a_green_main_s_build_is_kept_as_its_preview(db, tmp_path):
    out, green, kept, names = _tick(db, tmp_path, BUILD)
    assert out["green"] is True, out
    assert [p["sha"] for p in kept] == [out["sha"]] and names == [out["sha"]]  # no staging copy left
    dist = preview_files(previews_root(tmp_path / "hub.git"), out["sha"])
    assert dist is not None and (dist / "index.html").read_text() == PAGE
    assert (dist / "assets" / "s.css").is_file() and kept[0]["files"] == 2
    assert green[0]["preview"] == kept[0]["at"] and green[0]["screenshot"] == f"{out['sha']}.png"


def test_a_build_with_a_link_to_etc_passwd_is_not_kept(db, tmp_path):
    out, green, kept, names = _tick(db, tmp_path, BUILD + " && ln -s /etc/passwd dist/assets/passwd.css")
    assert out["green"] is True, out  # the page works; only its copy is refused
    assert kept == [] and names == []
    assert green[0]["preview"].startswith("refused: ") and "passwd.css is a symbolic link" in green[0]["preview"]
