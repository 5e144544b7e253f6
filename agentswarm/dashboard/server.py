"""The HTTP server: JSON API, steering behind a permission check, and the static page."""

from __future__ import annotations

import json
import mimetypes
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.exc import OperationalError

from agentswarm.config import Settings
from agentswarm.dashboard.app import DashboardApp, is_loopback, log
from agentswarm.dashboard.routes import match
from agentswarm.dashboard.web import MAX_BODY, ApiError, parse_body, query_params
from agentswarm.db.session import session_scope
from agentswarm.errors import IllegalTransition, SwarmError
from agentswarm.ops import steering
from agentswarm.planning.parsing import InvalidTask

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the dashboard's shared state."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: DashboardApp) -> None:
        self.app = app
        super().__init__(address, Handler)

    def server_close(self) -> None:
        super().server_close()
        self.app.close()


class Handler(BaseHTTPRequestHandler):
    """One request: route it, run it in one database session, answer JSON or a static file."""

    server: DashboardServer
    server_version = "agentswarm-dashboard"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        log.debug("%s " + format, self.address_string(), *args)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            self._check_host()
            if not url.path.startswith("/api/"):
                if method != "GET":
                    raise ApiError(405, "method not allowed")
                return self._static(url.path)
            route, ids, known = match(method, url.path)
            if route is None:
                raise ApiError(405 if known else 404, "method not allowed" if known else f"no endpoint {url.path}")
            if route.steers:
                self._check_steering()
                body = parse_body(self._read_body())
            app = self.server.app
            with session_scope(app.settings.database_url) as db:
                if route.steers:
                    status, payload = route.handler(app, db, body, *ids)
                else:
                    status, payload = 200, route.handler(app, db, query_params(url.query), *ids)
            self._json(status, payload)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON reply, never a traceback
            status, message = _error_reply(exc)
            if status >= 500:
                log.error("%s %s failed:\n%s", method, url.path, traceback.format_exc())
            self._json(status, {"error": message})

    def _check_host(self) -> None:
        # A page on another site can resolve its own name to 127.0.0.1 (DNS rebinding): on loopback
        # without a token, answer only requests addressed to a loopback name.
        app = self.server.app
        if app.loopback and not app.token:
            host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
            if not is_loopback(host):
                raise ApiError(403, "this dashboard answers only on a loopback address")

    def _check_steering(self) -> None:
        app = self.server.app
        if not app.may_steer(self.headers.get("Authorization")):
            if app.token:
                raise ApiError(401, "steering needs the dashboard token (Authorization: Bearer ...)")
            raise ApiError(403, "steering is off: the dashboard is not on loopback and no "
                           "AGENTSWARM_DASHBOARD_TOKEN is set")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            raise ApiError(415, "steering requests must be application/json")
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != (self.headers.get("Host") or ""):
            raise ApiError(403, "cross-origin steering requests are refused")

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise ApiError(413, f"body larger than {MAX_BODY} bytes")
        return self.rfile.read(length)

    def _static(self, path: str) -> None:
        if path in ("/", "/index.html"):
            name = "index.html"
        elif path.startswith("/static/"):
            name = path.removeprefix("/static/")
        else:
            raise ApiError(404, "not found")
        target = (STATIC / name).resolve()
        if target.parent != STATIC.resolve() or not target.is_file():
            raise ApiError(404, "not found")
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        self._send(200, target.read_bytes(), ctype)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload, default=str).encode(), "application/json")

    def _send(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        self.wfile.write(data)


def _error_reply(exc: Exception) -> tuple[int, str]:
    """The status and one-line message for an exception (internals stay in the server log)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    if isinstance(exc, steering.NotFound):
        return 404, str(exc)
    if isinstance(exc, steering.Conflict | IllegalTransition):
        return 409, str(exc)
    if isinstance(exc, InvalidTask):
        return 400, str(exc)
    if isinstance(exc, OperationalError):
        return 503, "the database does not answer"
    if isinstance(exc, SwarmError):
        return 503, str(exc).splitlines()[0][:300]
    return 500, f"internal error ({HTTPStatus.INTERNAL_SERVER_ERROR.phrase.lower()}; see the dashboard log)"


def make_server(host: str = "127.0.0.1", port: int = 8080, settings: Settings | None = None) -> DashboardServer:
    """A bound, not yet serving, dashboard server (port 0 picks a free port)."""
    if settings is None:
        from agentswarm.config import get_settings

        settings = get_settings()
    return DashboardServer((host, port), DashboardApp(settings=settings, host=host))


def serve(host: str = "127.0.0.1", port: int = 8080, settings: Settings | None = None) -> None:
    """Serve the dashboard until Ctrl-C."""
    server = make_server(host, port, settings)
    app = server.app
    if not app.loopback and not app.token:
        log.warning("dashboard on %s without AGENTSWARM_DASHBOARD_TOKEN: read-only, steering is off", host)
    print(f"dashboard at http://{host}:{server.server_address[1]}/ "
          f"(steering {'needs the token' if app.token else 'on' if app.loopback else 'off'}; Ctrl-C to stop)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
