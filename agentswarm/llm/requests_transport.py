"""LLMClient's default transport: a pooled requests session (TLS, proxies, keep-alive) for real endpoints.

Imported only when a client uses it (agentswarm.llm.make_transport), so that the sandbox side,
which reaches the model on loopback through the stdlib transport, does not pay for importing requests.
"""

from __future__ import annotations

from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter

from agentswarm.llm.transport import TransportError, TransportTimeout

STREAM_CHUNK = 512  # what requests' iter_lines reads at a time, as the client did before transports


def _lost(exc: requests.RequestException) -> TransportError:
    """A failure while reading the body: a stall (requests reports a read timeout as a ConnectionError) or a cut."""
    if isinstance(exc, requests.Timeout | requests.exceptions.ConnectionError) and "timed out" in str(exc):
        return TransportTimeout(f"the body stalled: {type(exc).__name__}", "ReadTimeout")
    return TransportError(f"{type(exc).__name__}: {exc}", type(exc).__name__)


class RequestsResponse:
    def __init__(self, resp: requests.Response) -> None:
        self._resp = resp
        self.status = resp.status_code

    def header(self, name: str) -> str | None:
        return self._resp.headers.get(name)

    def read(self) -> bytes:
        try:
            return self._resp.content
        except requests.RequestException as exc:
            raise _lost(exc) from None

    def chunks(self) -> Iterator[bytes]:
        try:
            yield from self._resp.iter_content(chunk_size=STREAM_CHUNK)
        except requests.RequestException as exc:
            raise _lost(exc) from None

    def close(self) -> None:
        self._resp.close()


class RequestsTransport:
    """One pooled session; every request is streamed, so the client reads (and judges) the body itself."""

    def __init__(self) -> None:
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def request(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                timeout_s: float) -> RequestsResponse:
        try:
            resp = self._session.request(method, url, data=body, headers=headers, timeout=timeout_s, stream=True)
        except requests.Timeout as exc:  # ConnectTimeout or ReadTimeout
            raise TransportTimeout(str(exc), type(exc).__name__) from None
        except requests.RequestException as exc:
            raise TransportError(str(exc), type(exc).__name__) from None
        return RequestsResponse(resp)

    def close(self) -> None:
        self._session.close()
