"""The hub served read-only over git's smart HTTP, for gate workers on other machines (`agentswarm hub-serve`).

A gate worker shares no filesystem with the orchestrator: it fetches the tree it must test by sha
(`agentswarm.git.mirror.fetch_shas`). The commits are often dangling (stacked merge commits the queue
made with no ref on them), so upload-pack runs with `uploadpack.allowAnySHA1InWant`.

Invariants:
- Read-only: the only git program ever started is `git upload-pack --stateless-rpc` on the hub. A
  request for receive-pack, the dumb protocol or any other path is refused (403/404) and starts nothing.
- One repository: the hub given to `serve_hub`. The URL picks no path: `/hub.git/...` and `/...` are
  the same repository, anything else is 404.
- Every request needs `Authorization: Bearer <token>` (compared in constant time), else 401 before
  anything else is looked at. The token is never logged; request lines are logged at DEBUG only.
- Bounded: a request body (after gzip) is at most MAX_BODY bytes; the pack is streamed, never held.
- upload-pack runs through the git layer (`SafeGit`): allow-listed environment, hooks off.
"""

from __future__ import annotations

import hmac
import io
import logging
import re
import socket
import subprocess
import sys
import tempfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, cast
from urllib.parse import parse_qs, urlsplit

from agentswarm.errors import ConfigError
from agentswarm.git.repo import SafeGit, require_git

log = logging.getLogger("agentswarm.git.serve")

MIN_TOKEN_LEN = 16
MAX_BODY = 64 * 1024 * 1024  # a fetch's wants and haves; a client past it is refused (413)
REPO_PREFIX = "/hub.git"  # optional: http://HOST:PORT/hub.git and http://HOST:PORT are the hub
SERVICE = "git-upload-pack"
# Fetch by sha: any object of the hub, reachable or not (the gate's stacked merge commits are dangling).
UPLOAD_PACK_CONFIG = ("uploadpack.allowAnySHA1InWant=true", "uploadpack.allowReachableSHA1InWant=true",
                      "uploadpack.allowTipSHA1InWant=true")
_GIT_PROTOCOL = re.compile(r"[A-Za-z0-9=:._-]{1,64}")  # e.g. version=2
_CHUNK = 64 * 1024
_SOCKET_TIMEOUT_S = 120.0


def parse_addr(addr: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` for IPv6) as (host, port); ConfigError naming HUB_SERVE_ADDR if it is not one."""
    host, sep, port = addr.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"HUB_SERVE_ADDR: {addr!r} is not host:port (e.g. 127.0.0.1:8471)")
    return host, int(port)


def pkt_line(text: str) -> bytes:
    """One git pkt-line: four hex digits of length (themselves included), then the data."""
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


class HubServer(ThreadingHTTPServer):
    """The HTTP server of one hub and one token; `.serve_forever()`, `.shutdown()`, `.server_address`."""

    daemon_threads = True

    def __init__(self, hub: Path, addr: tuple[str, int], token: str):
        self.hub, self.token = hub, token.encode()
        self.git = SafeGit(str(hub))  # no GIT_DIR: upload-pack is given the hub's path (--strict) itself
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)

    def handle_error(self, request: object, client_address: tuple[str, int] | object) -> None:
        """A request that broke off (the client went away mid-pack): one quiet line, no traceback."""
        exc = sys.exc_info()[1]
        log.info("hub-serve: a request ended early (%s)", type(exc).__name__ if exc else "?")

    @property
    def url(self) -> str:
        """The hub's URL as a client gives it (GATE_HUB_URL), with the port actually bound."""
        host, port = self.socket.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}{REPO_PREFIX}"


def serve_hub(hub: Path, addr: str, token: str) -> HubServer:
    """A server (not yet serving) of `hub` read-only on `addr` (`host:port`, port 0: any free one).

    Raises ConfigError when the token is missing or short, or the hub is not a bare repository.
    """
    if len(token.strip()) < MIN_TOKEN_LEN:
        raise ConfigError(f"HUB_SERVE_TOKEN must be set, at least {MIN_TOKEN_LEN} characters "
                          "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    hub = Path(hub).resolve()
    if not (hub / "objects").is_dir() or not (hub / "HEAD").is_file():
        raise ConfigError(f"HUB_PATH: {hub} is not a bare git repository (run `agentswarm init`)")
    require_git()
    return HubServer(hub, parse_addr(addr), token.strip())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentswarm-hub"
    sys_version = ""
    timeout = _SOCKET_TIMEOUT_S
    server: HubServer

    # --- logging: the request line and status at DEBUG; never a header (the token is one)
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s %s -> %s", self.client_address[0], self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s: %s", self.client_address[0], format % args)

    # --- routing
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self.close_connection = True  # one request per connection: simple, and a refused body is never read
        if not self._authorized():
            log.info("hub-serve: refused %s %s from %s: no valid token", method, urlsplit(self.path).path,
                     self.client_address[0])
            self._reply(401, "a valid token is required\n", {"WWW-Authenticate": 'Bearer realm="agentswarm hub"'})
            return
        parts = urlsplit(self.path)
        route = parts.path.removeprefix(REPO_PREFIX) if parts.path.startswith(REPO_PREFIX + "/") else parts.path
        if route == "/info/refs" and method == "GET":
            service = parse_qs(parts.query).get("service", [""])[0]
            if service == SERVICE:
                self._advertise()
            elif service:
                self._reply(403, f"{service} is not served here: the hub is read-only\n")
            else:
                self._reply(404, "only git's smart HTTP protocol is served\n")
        elif route == f"/{SERVICE}" and method == "POST":
            self._upload_pack()
        elif route in ("/git-receive-pack", "/info/refs"):
            self._reply(403, "the hub is read-only\n")
        else:
            self._reply(404, "not found\n")

    def _authorized(self) -> bool:
        scheme, _, given = (self.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self.server.token)

    def _reply(self, code: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(code)
        for name, value in {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)),
                            "Cache-Control": "no-cache", "Connection": "close", **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # --- the protocol
    def _protocol_env(self) -> dict[str, str]:
        """GIT_PROTOCOL from the client's Git-Protocol header (version=2), when it is well-formed."""
        value = (self.headers.get("Git-Protocol") or "").strip()
        return {"GIT_PROTOCOL": value} if _GIT_PROTOCOL.fullmatch(value) else {}

    def _argv(self, *extra: str) -> list[str]:
        config = [arg for item in UPLOAD_PACK_CONFIG for arg in ("-c", item)]
        return ["git", *config, "upload-pack", "--stateless-rpc", "--strict", *extra, str(self.server.hub)]

    def _advertise(self) -> None:
        env = self._protocol_env()
        result = self.server.git.call(self._argv("--advertise-refs"), env=env, timeout=60)
        if result.returncode != 0:
            log.warning("hub-serve: upload-pack --advertise-refs failed (%s): %s", result.returncode,
                        result.stderr.strip()[:300])
            self._reply(500, "upload-pack failed\n")
            return
        body = result.stdout
        if "version=2" not in env.get("GIT_PROTOCOL", ""):  # v0/v1: the smart HTTP preamble first
            body = pkt_line(f"# service={SERVICE}\n") + b"0000" + body
        self.send_response(200)
        for name, value in {"Content-Type": f"application/x-{SERVICE}-advertisement", "Cache-Control": "no-cache",
                            "Content-Length": str(len(body)), "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _upload_pack(self) -> None:
        if self.headers.get("Content-Type", "") != f"application/x-{SERVICE}-request":
            self._reply(415, f"expected application/x-{SERVICE}-request\n")
            return
        try:
            body = self._body()
        except _TooLarge:
            self._reply(413, "request too large\n")
            return
        except (ValueError, zlib.error, OSError) as exc:
            self._reply(400, f"bad request body ({type(exc).__name__})\n")
            return
        with tempfile.TemporaryFile() as errors:
            proc = self.server.git.popen(self._argv(), env=self._protocol_env(), stderr=errors)
            assert proc.stdin is not None and proc.stdout is not None
            feeder = threading.Thread(target=_feed, args=(proc.stdin, body), daemon=True)
            feeder.start()
            try:
                self._stream(proc)
            finally:
                if proc.poll() is None:  # the client went away mid-pack
                    proc.kill()
                proc.wait()
                feeder.join(timeout=5)
                if proc.returncode not in (0, -9):
                    errors.seek(0)
                    log.warning("hub-serve: upload-pack exited %s: %s", proc.returncode,
                                errors.read(300).decode("utf-8", "replace").strip())

    def _stream(self, proc: subprocess.Popen[bytes]) -> None:
        stdout = cast(io.BufferedReader, proc.stdout)  # stdout=PIPE, unbuffered=False: a BufferedReader
        first = stdout.read1(_CHUNK)
        if not first and proc.wait() != 0:
            self._reply(500, "upload-pack failed\n")
            return
        self.send_response(200)
        for name, value in {"Content-Type": f"application/x-{SERVICE}-result", "Cache-Control": "no-cache",
                            "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        chunk = first
        while chunk:
            self.wfile.write(chunk)
            chunk = stdout.read1(_CHUNK)
        self.wfile.flush()

    def _body(self) -> bytes:
        """The request body: Content-Length or chunked, gunzipped when the client compressed it."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raw = self._chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError("negative Content-Length")
            if length > MAX_BODY:
                raise _TooLarge
            raw = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = inflate.decompress(raw, MAX_BODY + 1)
            if len(raw) > MAX_BODY or inflate.unconsumed_tail:
                raise _TooLarge
        elif encoding not in ("", "identity"):
            raise ValueError(f"unknown Content-Encoding {encoding!r}")
        return raw

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
            if size < 0:
                raise ValueError("negative chunk size")
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise _TooLarge
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF after each chunk


class _TooLarge(Exception):
    pass


def _feed(stdin: IO[bytes], body: bytes) -> None:
    try:
        stdin.write(body)
    except (BrokenPipeError, OSError):
        pass  # upload-pack stopped reading (it failed, or was killed): its exit status says why
    finally:
        try:
            stdin.close()
        except OSError:
            pass
