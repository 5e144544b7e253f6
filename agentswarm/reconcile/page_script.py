"""The reconciler's page check, run inside a check sandbox (no network) in the checkout after the build:

    python3 -I page_script.py <screenshot.png> [<seconds>]

Standard library only. Serves dist/ on the sandbox's own loopback with our own server (never the
project's), opens it in one headless Chromium driven over the DevTools protocol on a pipe, and waits,
in real time and at most <seconds> in all, until <body data-status> leaves "booting". It passes only
when the page then reads "ok", still does SETTLE_FRAMES frames later, and its console stayed silent
(any level: the game logs nothing unless something is wrong); the screenshot is the page's 800x600
viewport at that moment.

Waiting in real time is the point: Chromium's `--virtual-time-budget` can run out before a slow GPU
process draws the first frame, and a loaded machine then saw a working page still "booting".

exit 0: the page works and the screenshot is at <screenshot.png>; 1: it does not, the reasons are
printed; 127: this machine has no Chromium.
"""

import os
import sys

# Python before 3.11 has no -P: never import from the directory this script was put in.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != _HERE]

import base64  # noqa: E402 - after the path is cleaned
import fcntl  # noqa: E402
import functools  # noqa: E402
import http.server  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

WIDTH, HEIGHT = 800, 600
NO_STATUS_GRACE_S = 2.0  # a loaded page that never set data-status at all: how long to give its scripts
# A loaded, idle page still "booting" (its script never ran, failed to import, or never draws): judged this
# long after it loaded, not at the check's limit. A slow first frame takes seconds, not this.
BOOT_GRACE_S = 10.0
MAX_MESSAGE = 64 << 20  # one DevTools message (a screenshot is well under 1 MiB)
BODY_CHARS = 500
CLOSE_S = 2.0  # for Chromium to close after the check (its log is whole then), before its processes are killed
# Chrome's own console lines: its notes on the screenshot's GPU readback and what its internal pages log.
NOT_THE_PAGE = re.compile(r"GL Driver Message \(OpenGL, Performance|source: chrome://|source: chrome-extension://")
STATE = ("(() => { const b = document.body, m = document.getElementById('message');"
         " return {status: b ? (b.dataset.status ?? null) : null, ready: document.readyState,"
         f" body: b ? b.outerHTML.slice(0, {BODY_CHARS * 4}).match(/^<body[^>]*>/)?.[0] ?? '' : '',"
         " message: m && !m.hidden ? m.textContent : ''}; })()")
SETTLE_FRAMES = 60  # after "ok", the page runs this many more frames before it is judged (about a second)
FRAMES = ("new Promise((r) => { let n = 0;"
          f" const f = () => (++n >= {SETTLE_FRAMES} ? r(true) : requestAnimationFrame(f)); requestAnimationFrame(f); }})")


class Failed(Exception):
    """The page check failed; the message says why."""


class TimedOut(Failed):
    """Chromium did not answer before the check's deadline."""


class Gone(Failed):
    """Chromium closed its end of the DevTools pipe (it stopped)."""


def console_errors(log: str) -> list[str]:
    """The page's console lines in Chromium's log, whatever their level (it logs every level as
    INFO:CONSOLE) and its uncaught errors, without Chrome's own; at most 20, without the log prefix."""
    lines = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return [re.sub(r"^\[[^]]*\] *", "", line) for line in lines if not NOT_THE_PAGE.search(line)][:20]


def console_event(msg: dict[str, Any]) -> str | None:
    """A line for a Runtime.consoleAPICalled or Runtime.exceptionThrown event, else None.

    Chromium's log has the same messages, but a message logged just before the browser closes may not reach
    it: the protocol delivers it before the reply to the call that follows it, so the verdict never misses it.
    """
    params = _dict(msg.get("params"))
    if msg.get("method") == "Runtime.consoleAPICalled":
        args = params.get("args")
        said = [a.get("value", a.get("description", "")) for a in args if isinstance(a, dict)] \
            if isinstance(args, list) else []
        return f"console.{params.get('type', 'log')}: " + " ".join(str(a) for a in said)[:BODY_CHARS]
    if msg.get("method") == "Runtime.exceptionThrown":
        details = _dict(params.get("exceptionDetails"))
        first = str(_dict(details.get("exception")).get("description") or "").split("\n", 1)[0]
        return f"{details.get('text', 'Uncaught')} {first}".strip()[:BODY_CHARS]
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class DevTools:
    """The DevTools protocol over Chromium's --remote-debugging-pipe: NUL-ended JSON both ways."""

    def __init__(self, to_browser: int, from_browser: int, limit: float) -> None:
        self.out, self.inp, self.limit = to_browser, from_browser, limit
        self.deadline = time.monotonic() + limit
        self.buf = b""
        self.ids = 0
        self.console: list[str] = []  # the page's console calls and uncaught errors, as the protocol reported them

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.ids += 1
        msg: dict[str, Any] = {"id": self.ids, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.out, data):]
        while True:
            reply = self._next()
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message', reply['error'])}")
                result = reply.get("result")
                return result if isinstance(result, dict) else {}

    def _next(self) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise TimedOut("no answer from chromium")
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise Gone("chromium closed its DevTools pipe")
            self.buf += chunk
            if len(self.buf) > MAX_MESSAGE:
                raise Failed("chromium sent a DevTools message over 64 MiB")
        line, self.buf = self.buf.split(b"\0", 1)
        msg = json.loads(line)
        if not isinstance(msg, dict):
            return {}
        said = console_event(msg)
        if said is not None and len(self.console) < 20:
            self.console.append(said)
        return msg

    def js(self, session: str, expression: str, *, wait: bool = False) -> Any:
        out = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True, awaitPromise=wait)
        if "exceptionDetails" in out:
            raise RuntimeError(str(out["exceptionDetails"].get("text", "an exception")))
        return out.get("result", {}).get("value")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the name http.server uses
        pass


def serve(directory: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """dist/ on a free port of this sandbox's loopback, served from a thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Quiet, directory=directory))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def launch(browser: str, work: str) -> tuple[subprocess.Popen, int, int]:
    """Chromium with its DevTools on fds 3 (its input) and 4 (its output), in its own process group.

    Chromium binds its singleton socket under $TMPDIR and a socket's path must fit in 108 bytes: a
    sandbox's TMPDIR can be longer, so it runs in `work` with TMPDIR=. (a short relative path)."""
    ends = []
    for fd in (*os.pipe(), *os.pipe()):  # moved to 10 and up, so that 3 and 4 are free
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    to_r, to_w, from_r, from_w = ends
    for fd in (3, 4):  # called before this process opened anything else: 3 and 4 are ours to take
        try:
            os.fstat(fd)
        except OSError:
            continue
        raise Failed(f"file descriptor {fd} is already open in the page check")
    os.dup2(to_r, 3)
    os.dup2(from_w, 4)
    os.close(to_r)
    os.close(from_w)
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader", "--disable-dev-shm-usage", f"--user-data-dir={work}/profile",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars",
            f"--window-size={WIDTH},{HEIGHT}", "--enable-logging=stderr", "--v=0", "--remote-debugging-pipe",
            "about:blank"]
    with open(os.path.join(work, "chromium.log"), "wb") as log:
        try:
            proc = subprocess.Popen(argv, cwd=work, env={**os.environ, "TMPDIR": "."}, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log, pass_fds=(3, 4), start_new_session=True)
        finally:
            os.close(3)
            os.close(4)
    return proc, to_w, from_r


def stop(proc: subprocess.Popen, tools: DevTools | None) -> None:
    """Close the browser (so its log is whole), or kill its process group when it does not go."""
    if tools is not None and proc.poll() is None:
        tools.deadline = time.monotonic() + CLOSE_S
        try:
            tools.call("Browser.close")
            proc.wait(max(0.0, tools.deadline - time.monotonic()))
        except (Failed, OSError, RuntimeError, ValueError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def load(tools: DevTools, url: str) -> tuple[str, dict[str, Any]]:
    """Open url in the browser's page and wait for it to leave "booting": the session and the page's state."""
    pages: list[str] = []
    while not pages:
        pages = [t["targetId"] for t in tools.call("Target.getTargets").get("targetInfos", [])
                 if t.get("type") == "page"]
        if not pages:
            if time.monotonic() >= tools.deadline:
                raise TimedOut("chromium opened no page")
            time.sleep(0.05)
    session = str(tools.call("Target.attachToTarget", targetId=pages[0], flatten=True)["sessionId"])
    tools.call("Runtime.enable", session)  # the console as events, in order with the replies
    tools.call("Emulation.setDeviceMetricsOverride", session, width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
               mobile=False)
    tools.call("Page.navigate", session, url=url)
    complete_at = None
    while True:
        try:
            state = tools.js(session, STATE)
        except RuntimeError:  # between documents: no context to evaluate in yet
            state = None
        if isinstance(state, dict) and state.get("body"):
            status = state.get("status")
            if isinstance(status, str) and status != "booting":
                return session, state
            if state.get("ready") == "complete":
                complete_at = complete_at or time.monotonic()
                loaded_for = time.monotonic() - complete_at
                if status is None and loaded_for >= NO_STATUS_GRACE_S:
                    return session, state
                if loaded_for >= BOOT_GRACE_S:
                    raise Failed(f"the page still reads {str(state['body'])[:BODY_CHARS]} {BOOT_GRACE_S:g} s after "
                                 "it loaded (its script did not run, or never drew a frame)")
        if time.monotonic() + 0.1 >= tools.deadline:  # no time for another look
            seen = str(state.get("body"))[:BODY_CHARS] if isinstance(state, dict) and state.get("body") else "no <body>"
            raise Failed(f"the page still reads {seen} after {tools.limit:g} s")
        time.sleep(0.1)


def check(png: str, limit: float) -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("page check: chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 127
    if os.path.exists(png):
        os.unlink(png)
    if not os.path.isfile("dist/index.html"):
        raise Failed("the build produced no dist/index.html")
    work = tempfile.mkdtemp(prefix="page-check.", dir=os.environ.get("TMPDIR") or "/tmp")
    proc, to_browser, from_browser = launch(browser, work)  # first: it takes fds 3 and 4 for a moment
    server, url = serve("dist")
    tools = DevTools(to_browser, from_browser, limit)
    shot = b""
    try:
        try:
            session, state = load(tools, url)
            if state.get("status") == "ok":  # judged after it ran a while: a game may fail in a later frame
                try:
                    tools.js(session, FRAMES, wait=True)
                except TimedOut:
                    raise Failed(f"the page read {str(state.get('body'))[:BODY_CHARS]} but did not draw "
                                 f"{SETTLE_FRAMES} more frames within {limit:g} s") from None
                state = tools.js(session, STATE)
                shot = base64.b64decode(tools.call("Page.captureScreenshot", session, format="png").get("data", ""))
        except TimedOut:
            raise Failed(f"chromium did not finish loading the page within {limit:g} s") from None
        except Gone:
            stop(proc, None)
            raise Failed(f"chromium failed (exit {proc.returncode}): {_log_tail(work)}") from None
        except RuntimeError as exc:
            raise Failed(f"chromium refused a DevTools call: {exc}") from None
        finally:
            stop(proc, tools)
            server.shutdown()
            server.server_close()
        with open(os.path.join(work, "chromium.log"), encoding="utf-8", errors="replace") as f:
            errors = console_errors(f.read()) or tools.console  # the log's lines when it has them (they name
            # the source), else what the protocol reported: either way a message the page logged turns it red
        body = str(state.get("body") or "no <body>")[:BODY_CHARS]
        if state.get("status") != "ok" or errors:
            lines = [f'expected <body data-status="ok"> and a silent console, got {body}']
            if state.get("message"):
                lines.append(f"the page's message: {str(state['message'])[:BODY_CHARS]}")
            if errors:
                lines += ["console errors:", *errors]
            raise Failed("\n".join(lines))
        if not shot.startswith(b"\x89PNG\r\n\x1a\n"):
            raise Failed("chromium made no screenshot")
        try:
            with open(png, "wb") as f:
                f.write(shot)
        except OSError as exc:
            raise Failed(f"cannot write the screenshot to {png}: {exc}") from None
        print(f"page check: {body}, a silent console, screenshot in {png}")
        return 0
    finally:
        os.close(to_browser)
        os.close(from_browser)
        shutil.rmtree(work, ignore_errors=True)


def _log_tail(work: str) -> str:
    try:
        with open(os.path.join(work, "chromium.log"), encoding="utf-8", errors="replace") as f:
            return "\n".join(line for line in f.read().splitlines() if "dbus" not in line.lower())[-2000:]
    except OSError:
        return ""


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: page_script.py <screenshot.png> [<seconds>]", file=sys.stderr)
        return 2
    try:
        limit = float(argv[1]) if len(argv) == 2 else 60.0
    except ValueError:
        print(f"page check: not a number of seconds: {argv[1]!r}", file=sys.stderr)
        return 2
    try:
        return check(argv[0], limit)
    except Failed as exc:
        print(f"page check: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
