"""The reconciler's page check: the built game loaded in headless Chromium, inside the check sandbox.

`PAGE_SCRIPT` (page_script.py beside this module, standard library only, run by the sandbox's own
`python3 -I`) runs in the checkout after the build, with no network: it serves dist/ on the sandbox's
own loopback with our own server (never the project's), drives one headless Chromium over the
DevTools protocol until `<body data-status>` leaves "booting" (in real time, not Chromium's virtual
time), reads the console, and takes an 800x600 screenshot. A green main's
screenshot is kept under `screenshots_root`, one `<sha>.png` each, the newest few only.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from agentswarm.sandbox.base import SandboxHandle
from agentswarm.sandbox.deps import CheckResult, run_in
from agentswarm.sandbox.files import write_atomic
from agentswarm.sandbox.local import LocalSandboxBackend

__all__ = ["PAGE_COMMAND", "PAGE_SCRIPT", "SCRIPT_PATH", "latest_screenshots", "page_check", "page_command",
           "save_screenshot", "screenshots_root"]

PAGE_SCRIPT = Path(__file__).with_name("page_script.py").read_text(encoding="utf-8")
PAGE_COMMAND = "page check (headless chromium)"
SCRIPT_PATH = "page_script.py"  # in the sandbox's workdir, beside repo/: never part of the checkout
SCREENSHOT_PATH = "page.png"
BROWSER_SHARE = 0.7  # of the check's time, for the browser from its start to the screenshot...
BROWSER_LIMIT_S = 120  # ...up to this: the stub loads in about a second
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def page_command(timeout_s: float) -> str:
    """The shell command (run in repo/, with PAGE_SCRIPT at SCRIPT_PATH beside it) that checks the page."""
    browser_s = max(1, int(min(BROWSER_LIMIT_S, timeout_s * BROWSER_SHARE)))
    return f"python3 -I ../{SCRIPT_PATH} ../{SCREENSHOT_PATH} {browser_s}"


def page_check(backend: LocalSandboxBackend, sb: SandboxHandle, timeout_s: float) -> tuple[CheckResult, bytes | None]:
    """Load the checkout's built dist/ in Chromium (no network): the result and, when it passed, the PNG."""
    backend.put_file(sb, SCRIPT_PATH, PAGE_SCRIPT.encode())
    res = run_in(backend, sb, page_command(timeout_s), timeout_s, network=False)
    res = dataclasses.replace(res, command=PAGE_COMMAND)
    png = backend.get_file(sb, SCREENSHOT_PATH) if res.ok else None
    return res, (png if png and png.startswith(PNG_SIGNATURE) else None)


def screenshots_root(hub_path: Path) -> Path:
    """Screenshots of green mains, beside the hub."""
    return hub_path.resolve().parent / "screenshots"


def save_screenshot(root: Path, sha: str, png: bytes, keep: int) -> Path:
    """Write `<root>/<sha>.png` atomically, then delete the oldest screenshots beyond `keep` (this one counts).

    The sha names the file, so it must be a full commit id (40 or 64 lowercase hex digits); keep >= 1.
    """
    if not _SHA.fullmatch(sha):
        raise ValueError(f"not a full commit id: {sha!r}")
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the screenshot being saved), got {keep}")
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{sha}.png"
    write_atomic(path, png)
    for old in _by_age(root)[keep:]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def latest_screenshots(root: Path, limit: int) -> list[Path]:
    """The newest `limit` screenshots, newest first ([] when none was kept yet)."""
    return _by_age(root)[:max(0, limit)]


def _by_age(root: Path) -> list[Path]:
    """The screenshots under root, newest first (files a concurrent prune removed are left out)."""
    found: list[tuple[int, Path]] = []
    for path in root.glob("*.png") if root.is_dir() else ():
        if not _SHA.fullmatch(path.stem):
            continue
        try:
            found.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:
            continue
    return [path for _, path in sorted(found, key=lambda item: item[0], reverse=True)]
