"""The VoxelCraft stub app builds, type-checks and tests with npm, and renders in headless Chromium.

Everything runs in a temporary copy of target-repo/ (node_modules never lands in the source tree);
one copy is built per module and shared by the node and browser tests.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.dashboard.cdp import CHROMIUM, browse

TARGET = Path(__file__).resolve().parents[2] / "target-repo"
STEPS = (("npm ci", ["npm", "ci", "--no-audit", "--no-fund"], 300),
         ("npx tsc --noEmit", ["npx", "tsc", "--noEmit"], 120),
         ("npm test", ["npm", "test"], 120),
         ("npm run build", ["npm", "run", "build"], 120))
PAGE_BACKGROUND = (0x10, 0x10, 0x14)  # index.html's body colour: what a page that never cleared would show
# Chrome's own WebGL performance notes (caused by its screenshot readback), not messages from the page.
BENIGN_CONSOLE = re.compile(r"GL Driver Message \(OpenGL, Performance")


@dataclass
class Build:
    root: Path
    results: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return len(self.results) == len(STEPS) and all(code == 0 for _, code, _ in self.results)

    def report(self) -> str:
        return "\n".join(f"$ {name} -> exit {code}\n{out[-3000:]}" for name, code, out in self.results)


def _copy_target(dest: Path) -> None:
    shutil.copytree(TARGET, dest, ignore=shutil.ignore_patterns("node_modules", "dist", ".vite"))


def _node_env() -> dict[str, str]:
    return {**os.environ, "CI": "true", "NO_COLOR": "1", "FORCE_COLOR": "0", "npm_config_update_notifier": "false"}


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Build:
    """A tmp copy of target-repo after npm ci, tsc, the tests and the build (stops at the first failure)."""
    missing = [tool for tool in ("node", "npm", "npx") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{'/'.join(missing)} not found on PATH: install Node.js >= 20.19 to check the VoxelCraft stub")
    root = tmp_path_factory.mktemp("voxelcraft") / "app"
    _copy_target(root)
    result = Build(root)
    for name, argv, timeout in STEPS:
        try:
            proc = subprocess.run(argv, cwd=root, env=_node_env(), capture_output=True, text=True, timeout=timeout)
            result.results.append((name, proc.returncode, proc.stdout + proc.stderr))
        except subprocess.TimeoutExpired as exc:
            result.results.append((name, -1, f"timed out after {timeout}s: {exc.output or ''}"))
        if result.results[-1][1] != 0:
            break
    return result


@pytest.mark.node
def test_npm_ci_typecheck_tests_and_build_pass(build):
    assert build.ok, build.report()
    vitest = build.results[2][2]
    assert re.search(r"Tests\s+\d+ passed", vitest), vitest
    index = (build.root / "dist" / "index.html").read_text(encoding="utf-8")
    scripts = re.findall(r'src="\./(assets/[^"]+\.js)"', index)
    assert scripts and all((build.root / "dist" / s).is_file() for s in scripts), index
    assert not (build.root / "dist" / "src").exists()


# --- the browser ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def preview_url(build):
    """The built app served by `vite preview` on a free loopback port."""
    if not build.ok:
        pytest.fail("the stub did not build, see test_npm_ci_typecheck_tests_and_build_pass:\n" + build.report())
    for _attempt in range(3):
        port = _free_port()
        proc = subprocess.Popen(["npx", "vite", "preview", "--host", "127.0.0.1", "--port", str(port), "--strictPort"],
                                cwd=build.root, env=_node_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            _stop(proc)
            continue  # port taken between probe and bind, or a slow start: try another port
        yield url
        _stop(proc)
        return
    pytest.fail("vite preview did not serve the app on any of 3 ports")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _console_errors(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return [line for line in lines if not BENIGN_CONSOLE.search(line)]


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG into rows of RGBA bytes (stdlib only)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    bpp = 4 if colour == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        rows.append(bytes(line) if bpp == 4 else bytes(
            v for px in range(width) for v in (*line[px * 3:px * 3 + 3], 255)))
    return width, height, rows


# The page's state once it left "booting", read over the DevTools protocol: waiting for it in real time
# rather than in Chromium's virtual time, where a budget could run out before a slow GPU process drew the
# first frame (the page then still read "booting" in a loaded CI run).
BOOTED = "document.body && document.body.dataset.status !== 'booting' && document.body.dataset.status"
STATE = ("(() => { const m = document.getElementById('message'); return {status: document.body.dataset.status,"
         " clear: document.body.dataset.clearColor || '', modules: document.body.dataset.modules || '',"
         " hidden: m.hidden, message: m.textContent}; })()")
TWO_FRAMES = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"


def _open(tmp_path: Path, url: str, *flags: str, shot: bool = False) -> tuple[dict, bytes | None, str]:
    """The page's state after boot, a PNG of its canvas when `shot`, and Chromium's log."""
    if CHROMIUM is None:
        pytest.skip("chromium not found on PATH (Debian: apt-get install -y chromium)")

    async def script(page):
        await page.wait(BOOTED)
        state = await page.js(STATE)
        png = None
        if shot:  # a headless window's viewport is smaller than the window: the page's own 800x600
            await page.call("Emulation.setDeviceMetricsOverride", width=800, height=600, deviceScaleFactor=1,
                            mobile=False)
            await page.js(TWO_FRAMES)
            png = await page.shot("#game")
        return state, png
    (state, png), log = browse(tmp_path, url, script, width=800, height=600, flags=flags)
    return state, png, log


@pytest.mark.node
@pytest.mark.browser
def test_page_boots_webgl2_and_reports_ok(preview_url, tmp_path):
    state, _, log = _open(tmp_path, preview_url)
    assert state["status"] == "ok", f"{state}\n{log[-3000:]}"
    assert re.fullmatch(r"#[0-9a-f]{6}", state["clear"]), state
    assert state["hidden"], f"the message box is shown: {state}"
    assert _console_errors(log) == []


@pytest.mark.node
@pytest.mark.browser
def test_screenshot_shows_the_cleared_canvas_without_console_errors(preview_url, tmp_path):
    state, png, log = _open(tmp_path, preview_url, shot=True)
    clear = state["clear"]
    assert state["status"] == "ok" and clear, f"{state}\n{log[-3000:]}"
    expected = bytes.fromhex(clear[1:])
    assert tuple(expected) != PAGE_BACKGROUND

    path = tmp_path / "stub.png"
    path.write_bytes(png)
    width, height, rows = read_png(path)
    assert (width, height) == (800, 600)
    sky = [row[x:x + 3] for row in rows[:height // 2:10] for x in range(0, width * 4, 40)]  # above any block
    matching = sum(1 for p in sky if all(abs(a - b) <= 2 for a, b in zip(p, expected, strict=True)))
    assert matching == len(sky), f"{len(sky) - matching} of {len(sky)} samples of the sky differ from {clear}"
    ground = {rows[y][x:x + 3] for y in range(height - 40, height, 10) for x in range(0, width * 4, 40)}
    assert len(ground) == 1 and ground != {expected}, ground  # the world view's ground, one colour
    assert state["modules"] == "2", state  # the stub's engine: clear.ts and context.ts, a block each
    assert _console_errors(log) == [], log[-3000:]


def _painted(rows: list[bytes], sky: bytes, width: int, height: int) -> int:
    """How many sampled pixels above the ground are not sky: the world view's blocks."""
    top = height - int(height * 0.12) - 2
    return sum(1 for row in rows[:top:4] for x in range(0, width * 4, 16)
               if any(abs(a - b) > 2 for a, b in zip(row[x:x + 3], sky, strict=True)))


@pytest.mark.node
@pytest.mark.browser
def test_the_world_fills_in_as_features_land(build, tmp_path):
    """What a demo run's preview shows: the page of an early main and of a late one differ, block by block.

    The modules are those the demo's simulated worker writes for the first few features and for most of
    them (FEATURES.json's files, agentswarm.demo.sim_files), built with the stub's own toolchain."""
    if not build.ok:
        pytest.fail("the stub did not build:\n" + build.report())
    import json

    from agentswarm.demo.sim_files import ENTRY_PATHS, file_content

    features = json.loads((TARGET / "FEATURES.json").read_text())["features"]
    seen = {}
    for name, count in (("early", 10), ("late", 150)):
        root = tmp_path / name
        _copy_target(root)
        (root / "node_modules").symlink_to(build.root / "node_modules")
        for feature in features[:count]:
            files = feature.get("files") or []
            for rel in (f for f in files if f not in ENTRY_PATHS):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(file_content(rel, feature["title"], files))
        built = subprocess.run(["npx", "vite", "build"], cwd=root, env=_node_env(), capture_output=True, text=True,
                               timeout=300)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        url = f"file://{root / 'dist' / 'index.html'}"
        state, png, log = _open(tmp_path, url, "--allow-file-access-from-files", shot=True)
        assert state["status"] == "ok", f"{state}\n{log[-3000:]}"
        (tmp_path / f"{name}.png").write_bytes(png)
        width, height, rows = read_png(tmp_path / f"{name}.png")
        seen[name] = (int(state["modules"]), _painted(rows, bytes.fromhex(state["clear"][1:]), width, height))
    (early_modules, early_blocks), (late_modules, late_blocks) = seen["early"], seen["late"]
    assert late_modules > early_modules + 100, seen
    assert late_blocks > 3 * early_blocks > 0, seen


@pytest.mark.node
@pytest.mark.browser
def test_page_explains_a_missing_webgl2(preview_url, tmp_path):
    state, _, log = _open(tmp_path, preview_url, "--disable-webgl")
    assert state["status"] == "no-webgl2", f"{state}\n{log[-3000:]}"
    assert not state["hidden"] and "needs WebGL2" in state["message"], state
