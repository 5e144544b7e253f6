"""How LLMClient's bytes move: one request out, a status, headers and the body back in chunks.

The client (agentswarm/llm/__init__.py) owns everything else: the retry loop, the timeouts' meaning, the
typed errors, the SSE parsing and the scrubbing. A transport only opens the connection, sends the request,
and hands back the answer, turning its library's failures into the three errors below.

Two transports:
- `requests` (requests_transport.py): the default, for real endpoints (TLS, proxies, a connection pool).
  Imported only when used.
- `stdlib` (here, on http.client): plain http only, no proxies, one connection per request. Chosen for
  loopback URLs (127.0.0.1, localhost, ::1), which is how the sandbox reaches the model (the runner's Bridge
  to the orchestrator's gate, or the fake LLM in tests): `requests` costs more to import than the rest of
  the sandbox side together, paid on every attempt. (A proxy from the environment could not reach this
  machine's loopback anyway.)

Standard library only: this module is imported inside slim sandbox images.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import http.client

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
TRANSPORTS = ("auto", "requests", "stdlib")
CHUNK = 64 * 1024


class TransportError(Exception):
    """The connection failed or was lost; `kind` names what happened (e.g. ConnectionRefusedError)."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind or type(self).__name__


class TransportTimeout(TransportError):
    """No connection, or no bytes, within the timeout (kind: ConnectTimeout or ReadTimeout)."""


class Response(Protocol):
    """An answer whose status and headers have arrived; the body is read on demand."""

    status: int

    def header(self, name: str) -> str | None:
        """A response header, case-insensitively; None if absent."""

    def read(self) -> bytes:
        """The whole body; TransportTimeout if it stalls, TransportError if it is cut off."""

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives; TransportTimeout if it stalls, TransportError if it is cut off."""

    def close(self) -> None:
        """Release the connection (the body need not have been read)."""


class Transport(Protocol):
    def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                timeout_s: float) -> Response:
        """Send one request and return once the status and headers are in.

        TransportTimeout if it does not connect or answer within timeout_s, TransportError if it cannot connect
        or the connection is lost before the answer. `timeout_s` also bounds every later wait for body bytes.
        """

    def close(self) -> None:
        """Release pooled connections."""


def is_loopback_http(url: str) -> bool:
    """True for a plain-http URL on this machine's loopback (127.0.0.0/8, localhost, ::1)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "http" and (host in LOOPBACK_HOSTS or host.startswith("127."))


class StdlibResponse:
    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        self.status = resp.status

    def header(self, name: str) -> str | None:
        return self._resp.getheader(name)

    def read(self) -> bytes:
        import http.client

        try:
            return self._resp.read()
        except TimeoutError:
            raise TransportTimeout("no body bytes within the timeout", "ReadTimeout") from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}", type(exc).__name__) from None

    def chunks(self) -> Iterator[bytes]:
        import http.client

        while True:
            try:
                data = self._resp.read1(CHUNK)
            except TimeoutError:
                raise TransportTimeout("the body stalled: timed out", "ReadTimeout") from None
            except (OSError, http.client.HTTPException) as exc:
                raise TransportError(f"{type(exc).__name__}: {exc}", type(exc).__name__) from None
            if not data:
                if self._resp.length:  # a Content-Length the body fell short of
                    raise TransportError(f"IncompleteRead: {self._resp.length} bytes missing", "IncompleteRead")
                return
            yield data

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


class StdlibTransport:
    """http.client, one connection per request (loopback: connecting costs next to nothing)."""

    def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                timeout_s: float) -> StdlibResponse:
        import http.client

        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the stdlib transport speaks plain http only, not {url!r}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        try:
            try:
                conn.connect()
            except TimeoutError:
                raise TransportTimeout(f"connect to {parts.netloc} timed out", "ConnectTimeout") from None
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
        except TransportError:
            conn.close()
            raise
        except TimeoutError:
            conn.close()
            raise TransportTimeout(f"no answer from {parts.netloc}: timed out", "ReadTimeout") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(f"{parts.netloc}: {type(exc).__name__}: {exc}", type(exc).__name__) from None
        return StdlibResponse(conn, resp)

    def close(self) -> None:
        pass


__all__ = ["LOOPBACK_HOSTS", "TRANSPORTS", "Response", "StdlibTransport", "Transport", "TransportError",
           "TransportTimeout", "is_loopback_http"]
