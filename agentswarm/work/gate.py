"""The orchestrator's end of a sandbox's model access: a Unix socket, the real key, every call counted here.

A sandbox has no network. Its runner reaches the model only through this gate, whose socket is
bound into the sandbox; the gate accepts a per-sandbox token, adds the real key upstream and
records each call (tokens, latency, errors). These records, not the agent's own account, are what
the run's accounting stores: a sandbox cannot under-report what it spent.
"""

from __future__ import annotations

import os
import shutil
import socketserver
import tempfile
import threading
from pathlib import Path

from agentswarm.agent.contract import GATE_SLOT_PATH, SLOT_HEADER, LLMCallRecord
from agentswarm.agent.llmproxy import LLMProxy, ProxyHandler

_slot_lock = threading.Lock()
_slot_pools: dict[int, threading.BoundedSemaphore] = {}


def check_slots(n: int) -> threading.BoundedSemaphore:
    """The process-wide pool of presubmit slots of size n (shared by every sandbox of this worker)."""
    with _slot_lock:
        return _slot_pools.setdefault(n, threading.BoundedSemaphore(n))


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class GateHandler(ProxyHandler):
    """The proxy's handler, plus the presubmit slot: granted, held while the sandbox keeps the connection open."""

    proxy: LLMGate

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != GATE_SLOT_PATH:
            super().do_POST()
            return
        self.close_connection = True
        if not self.proxy._authorized(self.headers):
            self._reply(401, b'{"error": {"message": "agentswarm gate: bad key", "type": "auth"}}')
            return
        pool = self.proxy.slots
        if pool is None or not pool.acquire(timeout=self.proxy.slot_wait_s):
            self._reply(200 if pool is None else 503, b"{}")
            return
        try:
            self.send_response(200)
            self.send_header(SLOT_HEADER, "granted")  # in the headers: the sandbox needs read no body
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
            self.connection.settimeout(self.proxy.slot_hold_s)
            while self.connection.recv(4096):  # until the sandbox hangs up (or dies)
                pass
        except OSError:
            pass
        finally:
            pool.release()


class LLMGate(LLMProxy):
    """`with LLMGate(upstream, key) as gate:` serves gate.socket_path; gate.calls holds what passed.

    With `slots`, it also hands out presubmit slots from that (process-wide) pool.
    """

    def __init__(self, upstream: str, api_key: str | None, *, timeout_s: float = 300.0,
                 slots: threading.BoundedSemaphore | None = None, slot_wait_s: float = 600.0,
                 slot_hold_s: float = 900.0) -> None:
        self.slots, self.slot_wait_s, self.slot_hold_s = slots, slot_wait_s, slot_hold_s
        self.calls: list[LLMCallRecord] = []
        self._calls_lock = threading.Lock()
        super().__init__(upstream, api_key, on_call=self._record, timeout_s=timeout_s)
        # A short path (AF_UNIX allows ~107 bytes), traversable by the sandbox's user but not listable.
        self.directory = Path(tempfile.mkdtemp(prefix="as-gate-"))
        self.directory.chmod(0o711)
        self.socket_path = str(self.directory / "gate.sock")
        self._server: _UnixHTTPServer | None = None

    def _record(self, call: LLMCallRecord) -> None:
        with self._calls_lock:
            self.calls.append(call)

    def __enter__(self) -> LLMGate:
        handler = type("BoundGateHandler", (GateHandler,), {"proxy": self})
        self._server = _UnixHTTPServer(self.socket_path, handler)
        os.chmod(self.socket_path, 0o666)  # the sandbox's user connects; the token still guards the calls
        threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True, name="llm-gate").start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._session.close()
        self.remove()

    def remove(self) -> None:
        """Delete the socket's directory (idempotent; also when the gate was never started)."""
        shutil.rmtree(self.directory, ignore_errors=True)
