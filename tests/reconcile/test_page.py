"""The page check against the real VoxelCraft stub: built and loaded in headless Chromium inside a check sandbox.

One hub per module holds main (the stub) and a few broken variants; the dependencies are installed
once into the module's cache, and each variant is checked out, built with `vite build` and loaded,
all in bubblewrap sandboxes with no network. The screenshot store is tested on plain files.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentswarm.config import load_settings
from agentswarm.reconcile import page_script
from agentswarm.reconcile.checks import CHECK_RUN
from agentswarm.reconcile.page import (
    PAGE_COMMAND,
    PAGE_SCRIPT,
    latest_screenshots,
    page_check,
    save_screenshot,
    screenshots_root,
)
from agentswarm.sandbox.base import SandboxHandle
from agentswarm.sandbox.deps import attach_deps, checkout, deps_root, ensure_deps, run_in
from agentswarm.sandbox.factory import check_backend_for
from agentswarm.sandbox.local import LocalSandboxBackend
from tests.reconcile.hubs import git, hub_from, main_of
from tests.target.test_stub_app import PAGE_BACKGROUND, TARGET, read_png

TIMEOUT_S = 60
SHA = "a" * 40


@dataclass
class Stub:
    backend: LocalSandboxBackend
    hub: Path
    modules: Path


def _stub_hub(tmp: Path) -> Path:
    src = tmp / "src"
    shutil.copytree(TARGET, src, ignore=shutil.ignore_patterns("node_modules", "dist", ".vite"))
    return hub_from(src, tmp, "the stub")


@pytest.fixture(scope="module")
def stub(tmp_path_factory) -> Stub:
    """A hub of the VoxelCraft stub, the check backend of its settings and its dependencies, installed once."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{'/'.join(missing)} not found on PATH: install Node.js >= 20.19 to build the VoxelCraft stub")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium not found on PATH (Debian: apt-get install -y chromium)")
    tmp = tmp_path_factory.mktemp("page")
    hub = _stub_hub(tmp)
    settings = load_settings(hub_path=hub, sandbox_root=tmp / "sandboxes")
    backend = check_backend_for(settings)
    modules, installed = ensure_deps(backend, str(hub), main_of(hub), settings.reconcile_install,
                                     deps_root(hub), 300, run_id=CHECK_RUN)
    if modules is None:
        pytest.skip(f"npm ci could not install the stub's dependencies: {installed and installed.output[-500:]}")
    return Stub(backend, hub, modules)


def _variant(stub: Stub, name: str, index_ts_tail: str, *, head: str = "", whole: str | None = None) -> str:
    """A commit on branch `name`: main with code appended to src/index.ts (and `head` put after its imports),
    or with `whole` as all of src/index.ts."""
    clone = stub.hub.parent / f"clone-{name}"
    git("clone", "-q", str(stub.hub), str(clone), cwd=stub.hub.parent)
    index = clone / "src" / "index.ts"
    text = index.read_text()
    imports = text.index("\n\n") + 1
    index.write_text(whole if whole is not None else text[:imports] + head + text[imports:] + index_ts_tail)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", name, cwd=clone)
    git("push", "-q", "origin", f"HEAD:refs/heads/{name}", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone)


@contextmanager
def _checked_out(stub: Stub, sha: str, *, build: bool = True) -> Iterator[SandboxHandle]:
    """A check sandbox at sha with the dependencies attached, built with vite unless told not to."""
    sb = checkout(stub.backend, str(stub.hub), sha, f"page-{sha[:12]}", run_id=CHECK_RUN)
    try:
        attach_deps(stub.backend, sb, stub.modules)
        if build:
            built = run_in(stub.backend, sb, "node_modules/.bin/vite build", TIMEOUT_S)
            assert built.ok, built.output
        yield sb
    finally:
        stub.backend.terminate(sb)


@pytest.fixture(scope="module")
def green(stub):
    """The page check of main (the stub as shipped): its result and screenshot."""
    with _checked_out(stub, main_of(stub.hub)) as sb:
        return page_check(stub.backend, sb, TIMEOUT_S)


# --- the stub as shipped -----------------------------------------------------------------------------


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_stub_is_green_with_a_screenshot_of_its_sky_and_ground(green, tmp_path):
    res, png = green
    assert res.ok and res.command == PAGE_COMMAND, res.output
    assert png is not None, res.output
    clear = re.search(r'data-clear-color="#([0-9a-f]{6})"', res.output)
    assert clear, res.output
    expected = bytes.fromhex(clear.group(1))
    assert tuple(expected) != PAGE_BACKGROUND
    (tmp_path / "page.png").write_bytes(png)
    width, height, rows = read_png(tmp_path / "page.png")
    assert (width, height) == (800, 600)
    # The sky above the world view's blocks is the cleared colour; the ground below is one other colour.
    pixels = [row[x:x + 3] for row in rows[:height // 2:10] for x in range(0, width * 4, 40)]
    off = [p for p in pixels if any(abs(a - b) > 2 for a, b in zip(p, expected, strict=True))]
    assert not off, f"{len(off)} of {len(pixels)} samples differ from #{clear.group(1)}: {off[:3]}"
    ground = {rows[y][x:x + 3] for y in range(height - 40, height, 10) for x in range(0, width * 4, 40)}
    assert len(ground) == 1 and ground != {expected}, ground


# --- broken pages ------------------------------------------------------------------------------------


def _red(stub: Stub, name: str, tail: str, *, head: str = "", whole: str | None = None, timeout_s: float = TIMEOUT_S):
    """The page check of a variant of main, asserted red (exit 1, no screenshot): its result."""
    sha = _variant(stub, name, tail, head=head, whole=whole)
    with _checked_out(stub, sha) as sb:
        res, png = page_check(stub.backend, sb, timeout_s)
    assert res.exit_code == 1 and png is None, res.output
    return res


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_a_page_that_throws_at_start_is_red_with_the_error(stub):
    res = _red(stub, "throws", "\nthrow new Error('boom at start');\n")
    assert 'data-status="error"' in res.output and "boom at start" in res.output, res.output
    assert "Uncaught" in res.output


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_a_console_error_turns_an_ok_page_red(stub):
    res = _red(stub, "noisy", "\nconsole.error('texture atlas missing');\n")
    assert 'data-status="ok"' in res.output and "texture atlas missing" in res.output, res.output


def _in_frame(n: int, statement: str) -> str:
    """TypeScript appended to index.ts: `statement` runs in the page's n-th animation frame after start."""
    return (f"\nlet frames = 0;\nconst later = (): void => {{\n  if (++frames === {n}) {statement}\n"
            "  requestAnimationFrame(later);\n};\nrequestAnimationFrame(later);\n")


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_a_page_that_fails_in_a_later_frame_is_red(stub):
    """"ok" after the first frame is not the verdict: the page is judged after it ran a while."""
    res = _red(stub, "later", _in_frame(20, "throw new Error('boom in frame 20');"))
    assert 'data-status="error"' in res.output and "boom in frame 20" in res.output, res.output


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_a_console_warning_in_a_later_frame_turns_it_red(stub):
    res = _red(stub, "warns-later", _in_frame(40, "console.warn('chunk queue backing up');"))
    assert 'data-status="ok"' in res.output and "chunk queue backing up" in res.output, res.output


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_a_page_that_never_draws_is_red_within_the_limit(stub):
    """No first frame ever: the check waits in real time up to its limit, then names what the page reads."""
    res = _red(stub, "never-draws", "", head="window.requestAnimationFrame = () => 0;\n", timeout_s=10)
    assert not res.timed_out, res.output
    assert 'the page still reads <body data-status="booting"' in res.output, res.output
    assert "after 7 s" in res.output and res.duration_s < 10, res.output


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_a_page_whose_script_never_boots_is_red_soon_after_it_loaded_not_at_the_limit(stub):
    """What a demo run met: a feature replaced src/index.ts with code that never touches the page (the body
    keeps index.html's "booting"). Judged BOOT_GRACE_S after the page loaded, not at the check's limit."""
    res = _red(stub, "no-boot", "", whole="export const nothing = 0;\n", timeout_s=90)
    assert f"booting\"> {page_script.BOOT_GRACE_S:g} s after it loaded" in res.output, res.output
    assert res.duration_s < page_script.BOOT_GRACE_S + 15, res.output  # the limit is 63 s


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_a_page_whose_frames_stop_after_it_read_ok_is_red(stub):
    """requestAnimationFrame broken after the first frame: "ok" alone does not pass, and the reason is named."""
    res = _red(stub, "frames-stop", "", timeout_s=10,
               head="const raf = window.requestAnimationFrame.bind(window);\nlet asked = 0;\n"
                    "window.requestAnimationFrame = (f: FrameRequestCallback): number => (++asked <= 1 ? raf(f) : 0);\n")
    assert 'the page read <body data-status="ok"' in res.output, res.output
    assert "but did not draw 60 more frames within 7 s" in res.output, res.output


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_a_page_without_a_status_is_red_without_waiting_for_the_limit(stub):
    """A loaded page that never sets data-status is judged a moment after it loaded, not at the limit."""
    res = _red(stub, "no-status", "", head="new MutationObserver(() => document.body.removeAttribute('data-status'))"
               ".observe(document.body, { attributes: true, attributeFilter: ['data-status'] });\n")
    assert 'expected <body data-status="ok"> and a silent console, got <body data-clear-color=' in res.output, \
        res.output
    assert "console errors" not in res.output and res.duration_s < 15, res.output


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_a_page_that_never_finishes_is_stopped_by_the_checks_own_limit(stub):
    res = _red(stub, "spins", "\nfor (;;) document.title = 'a frame that never ends';\n", timeout_s=8)
    assert not res.timed_out, res.output
    assert "did not finish loading the page within 5 s" in res.output, res.output


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_no_dist_is_red_and_no_chromium_cannot_run(stub):
    with _checked_out(stub, main_of(stub.hub), build=False) as sb:
        res, png = page_check(stub.backend, sb, TIMEOUT_S)
        assert res.exit_code == 1 and png is None
        assert "the build produced no dist/index.html" in res.output, res.output
        stub.backend.put_file(sb, "page_script.py", PAGE_SCRIPT.encode())
        bare = run_in(stub.backend, sb, "PATH=/nowhere /usr/bin/python3 -I ../page_script.py ../page.png", TIMEOUT_S)
        assert bare.exit_code == 127 and "apt-get install chromium" in bare.output, bare.output
    assert stub.backend.list(CHECK_RUN) == []


# --- the network -------------------------------------------------------------------------------------


@pytest.fixture
def host_server() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on the host's loopback that records every request: the page must never reach it."""
    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.node
@pytest.mark.browser
@pytest.mark.bwrap
def test_the_page_cannot_reach_the_host_or_any_network(stub, host_server):
    port, hits = host_server
    assert _listening(port)
    targets = ["http://10.0.0.1/", "http://127.0.0.1:5432/", f"http://127.0.0.1:{port}/leak"]
    probe = ("\nvoid Promise.all(" + repr(targets) + ".map((url) => fetch(url, { mode: 'no-cors' })"
             ".then(() => `reached ${url}`, () => `blocked ${url}`)))"
             ".then((seen) => { document.body.dataset.probe = seen.join(' '); });\n")
    sha = _variant(stub, "phones-home", probe)
    with _checked_out(stub, sha) as sb:
        res, _ = page_check(stub.backend, sb, TIMEOUT_S)
    assert hits == [], f"the page reached the host: {hits}"
    assert not res.timed_out and res.duration_s < TIMEOUT_S, res.output
    assert res.ok, res.output  # the page handled the failures, so it stays green
    seen = re.search(r'data-probe="([^"]*)"', res.output)
    assert seen and seen.group(1).split() == [w for t in targets for w in ("blocked", t)], res.output


# --- the screenshot store ----------------------------------------------------------------------------


def _save(root: Path, n: int, keep: int) -> Path:
    """Save a screenshot named after n, dated n seconds after the epoch's first day (so older n is older)."""
    path = save_screenshot(root, f"{n:040x}", b"png %d" % n, keep)
    os.utime(path, (86_400 + n, 86_400 + n))
    return path


def test_save_keeps_the_newest_and_lists_them_newest_first(tmp_path):
    root = tmp_path / "screenshots"
    assert latest_screenshots(root, 5) == []
    for n in range(1, 5):
        _save(root, n, keep=3)
    assert [p.name for p in latest_screenshots(root, 10)] == [f"{n:040x}.png" for n in (4, 3, 2)]
    assert [p.read_bytes() for p in latest_screenshots(root, 2)] == [b"png 4", b"png 3"]
    newest = save_screenshot(root, SHA, b"again", keep=2)  # dated now: the newest
    assert latest_screenshots(root, 10) == [newest, root / f"{4:040x}.png"]
    assert sorted(p.name for p in root.iterdir()) == sorted([newest.name, f"{4:040x}.png"])  # no temp file left


def test_saving_the_same_sha_again_replaces_it(tmp_path):
    save_screenshot(tmp_path, SHA, b"first", keep=3)
    path = save_screenshot(tmp_path, SHA, b"second", keep=3)
    assert latest_screenshots(tmp_path, 3) == [path] and path.read_bytes() == b"second"


@pytest.mark.parametrize("sha", ["a" * 39, "A" * 40, "g" * 40, "a" * 41, "../" + "a" * 37, "a" * 40 + "/x", ""])
def test_a_bad_sha_is_refused(tmp_path, sha):
    with pytest.raises(ValueError, match="not a full commit id"):
        save_screenshot(tmp_path, sha, b"png", keep=3)
    assert list(tmp_path.iterdir()) == []


def test_keep_below_one_is_refused_and_64_hex_shas_are_fine(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        save_screenshot(tmp_path, SHA, b"png", keep=0)
    assert save_screenshot(tmp_path, "b" * 64, b"png", keep=1).name == "b" * 64 + ".png"


def test_screenshots_live_beside_the_hub(tmp_path):
    assert screenshots_root(tmp_path / "var" / "hub.git") == (tmp_path / "var" / "screenshots").resolve()


# --- the script's own parts --------------------------------------------------------------------------


def test_console_lines_are_the_pages_own_without_chromes():
    log = "\n".join([
        '[1:2:1128/1:INFO:CONSOLE(3)] "texture atlas missing", source: http://127.0.0.1:1/assets/a.js (3)',
        '[1:2:1128/1:INFO:CONSOLE(1)] "GL Driver Message (OpenGL, Performance, GL_CLOSE_PATH_NV, High): x"',
        '[1:2:1128/1:INFO:CONSOLE(9)] "hello", source: chrome://newtab/ (9)',
        '[1:2:1128/1:ERROR:dbus/bus.cc:405] Failed to connect to the bus',
        "Uncaught TypeError: x is not a function",
    ])
    assert page_script.console_errors(log) == [
        '"texture atlas missing", source: http://127.0.0.1:1/assets/a.js (3)', "Uncaught TypeError: x is not a function"]
    assert len(page_script.console_errors('[p:INFO:CONSOLE(1)] "x"\n' * 50)) == 20


def test_the_protocols_console_events_become_lines():
    called = {"method": "Runtime.consoleAPICalled", "params": {"type": "error", "args": [
        {"type": "string", "value": "texture atlas missing"}, {"type": "number", "value": 3},
        {"type": "object", "description": "Object"}]}}
    thrown = {"method": "Runtime.exceptionThrown", "params": {"exceptionDetails": {
        "text": "Uncaught", "exception": {"description": "Error: boom\n    at start (index.js:1:1)"}}}}
    assert page_script.console_event(called) == "console.error: texture atlas missing 3 Object"
    assert page_script.console_event(thrown) == "Uncaught Error: boom"
    for other in ({"id": 3, "result": {}}, {"method": "Page.loadEventFired", "params": {}},
                  {"method": "Runtime.consoleAPICalled", "params": None},
                  {"method": "Runtime.exceptionThrown", "params": {"exceptionDetails": "odd"}}):
        assert page_script.console_event(other) in (None, "console.log: ", "Uncaught")


@pytest.mark.parametrize("argv", [[], ["a.png", "10", "extra"], ["a.png", "soon"]])
def test_bad_arguments_are_refused_with_usage(argv, capsys):
    assert page_script.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: page_script.py") or "not a number of seconds: 'soon'" in err, err
