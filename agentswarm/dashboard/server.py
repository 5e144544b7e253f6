"""The HTTP server: JSON API (and screenshots), steering behind a permission check, and the static page.

Who may do what is decided in `agentswarm.dashboard.app` (Host names, token, bind address).
"""

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
from agentswarm.control import steering
from agentswarm.dashboard.app import HOSTS_ENV, TOKEN_ENV, DashboardApp, log
from agentswarm.dashboard.preview import is_preview_path, serve_file
from agentswarm.dashboard.routes import match
from agentswarm.dashboard.web import MAX_BODY, ApiError, RawReply, parse_body, query_params
from agentswarm.db.session import session_scope
from agentswarm.errors import IllegalTransition, SwarmError
from agentswarm.planning.parsing import InvalidTask

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
READ_TIMEOUT_S = 30.0  # a client that sends nothing for this long loses its connection (and its thread)
HOST_REFUSED = ("this dashboard answers only to a loopback host name or one listed in "
                f"{HOSTS_ENV}; the Host header named something else")


class DashboardServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the dashboard's shared state."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: DashboardApp, read_timeout: float = READ_TIMEOUT_S) -> None:
        self.app = app
        self.read_timeout = read_timeout
        super().__init__(address, Handler)

    def server_close(self) -> None:
        super().server_close()
        self.app.close()


class Handler(BaseHTTPRequestHandler):
    """One request: route it, run it in one database session, answer JSON or a static file."""

    server: DashboardServer
    server_version = "agentswarm-dashboard"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Every read of the request line, headers and body waits at most this long; http.server closes
        # the connection on a timeout before a request, `_read_body` answers 408 on one inside the body.
        self.connection.settimeout(self.server.read_timeout)

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
            if is_preview_path(url.path) and method == "GET":  # the built game, in a box of its own
                reply = serve_file(self.server.app, url.path, self.headers.get("Authorization"))
                return self._send(reply.status, reply.data, reply.content_type, headers=reply.headers)
            if not url.path.startswith("/api/") and url.path != "/metrics":
                if method != "GET":
                    raise ApiError(405, "method not allowed")
                return self._static(url.path)
            route, ids, known = match(method, url.path)
            if route is None:
                raise ApiError(405 if known else 404, "method not allowed" if known else f"no endpoint {url.path}")
            if route.steers:
                self._check_steering()
                body = parse_body(self._read_body())
            else:
                self._check_read()
            app = self.server.app
            with session_scope(app.settings.database_url) as db:
                if route.steers:
                    status, payload = route.handler(app, db, body, *ids)
                else:
                    status, payload = 200, route.handler(app, db, query_params(url.query), *ids)
            if isinstance(payload, RawReply):
                return self._send(status, payload.data, payload.content_type, payload.cache)
            self._json(status, payload)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON reply, never a traceback
            status, message = _error_reply(exc)
            if status >= 500:
                log.error("%s %s failed:\n%s", method, url.path, traceback.format_exc())
            self._json(status, {"error": message})

    def _check_host(self) -> None:
        # A page on another site can resolve its own name to this machine (DNS rebinding); its requests
        # still carry its own name in Host. Checked first, in every binding mode, for every path.
        if not self.server.app.host_allowed(self.headers.get("Host"), self.server.server_address[1]):
            raise ApiError(403, HOST_REFUSED)

    def _check_read(self) -> None:
        if not self.server.app.may_read(self.headers.get("Authorization")):
            raise ApiError(401, f"reading this dashboard off loopback needs the token ({TOKEN_ENV}) "
                           "as Authorization: Bearer ...")

    def _check_steering(self) -> None:
        app = self.server.app
        if not app.may_steer(self.headers.get("Authorization")):
            if app.token:
                raise ApiError(401, "steering needs the dashboard token (Authorization: Bearer ...)")
            raise ApiError(403, f"steering is off: the dashboard is not on loopback and no {TOKEN_ENV} is set")
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
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            data = b""
        if len(data) < length:
            self.close_connection = True
            raise ApiError(408, "the request body did not arrive in time")
        return data

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

    def _send(self, status: int, data: bytes, ctype: str, cache: str = "no-store",
              headers: dict[str, str] | None = None) -> None:
        """Reply; `headers` add to (or replace: the CSP, the caching) the ones every reply carries."""
        fixed = {"Content-Type": ctype, "Content-Length": str(len(data)), "Cache-Control": cache,
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                 "Content-Security-Policy": CSP}
        self.send_response(status)
        for name, value in {**fixed, **(headers or {})}.items():
            self.send_header(name, value)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="agentswarm-dashboard"')
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError as exc:  # the client went away or stopped reading (timeout): nothing left to tell it
            self.close_connection = True
            log.debug("reply to %s not delivered: %s", self.address_string(), exc)


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


def make_server(host: str = "127.0.0.1", port: int = 8080, settings: Settings | None = None,
                read_timeout: float = READ_TIMEOUT_S) -> DashboardServer:
    """A bound, not yet serving, dashboard server (port 0 picks a free port).

    Raises ConfigError (one line) before binding when the address is off loopback and no token is set.
    """
    if settings is None:
        from agentswarm.config import get_settings

        settings = get_settings()
    app = DashboardApp(settings=settings, host=host)
    app.check_bind()
    return DashboardServer((host, port), app, read_timeout)


def serve(host: str = "127.0.0.1", port: int = 8080, settings: Settings | None = None) -> None:
    """Serve the dashboard until Ctrl-C."""
    server = make_server(host, port, settings)
    app = server.app
    if app.loopback and app.settings.dashboard_hosts:
        log.warning("%s is ignored: the dashboard listens on loopback (%s) and answers to loopback names only",
                    HOSTS_ENV, host)
    access = ("reads open, steering needs the token" if app.token else "reads and steering open") if app.loopback \
        else "reads and steering need the token"
    print(f"dashboard at http://{host}:{server.server_address[1]}/ ({access}; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
