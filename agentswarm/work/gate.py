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

from agentswarm.agent.contract import LLMCallRecord
from agentswarm.agent.llmproxy import LLMProxy, ProxyHandler


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class LLMGate(LLMProxy):
    """`with LLMGate(upstream, key) as gate:` serves gate.socket_path; gate.calls holds what passed."""

    def __init__(self, upstream: str, api_key: str | None, *, timeout_s: float = 300.0) -> None:
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
        handler = type("GateHandler", (ProxyHandler,), {"proxy": self})
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
