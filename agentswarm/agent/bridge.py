"""A loopback TCP port that carries bytes to and from a Unix socket (standard library only).

Inside an isolated sandbox there is no network: the orchestrator's LLM gate is reachable only
through a Unix socket bound into it. HTTP clients (the built-in agent, an external agent, the
runner's own proxy) need a TCP URL, so the runner opens one on 127.0.0.1 and pipes each
connection to a fresh connection on the socket. Nothing is parsed or changed on the way.
"""

from __future__ import annotations

import socket
import socketserver
import threading

CHUNK = 64 * 1024


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class _Pipe(socketserver.BaseRequestHandler):
    server: Bridge

    def handle(self) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.server.socket_path)
        except OSError:
            upstream.close()
            return  # the client sees the connection close: the gate is gone
        back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
        back.start()
        pump(self.request, upstream)
        back.join()
        upstream.close()


class Bridge(socketserver.ThreadingTCPServer):
    """http://127.0.0.1:<port> in front of a Unix socket; serve in a daemon thread with start()."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        super().__init__(("127.0.0.1", 0), _Pipe)

    @property
    def url(self) -> str:
        """The base URL clients use (no /v1: callers add their own paths)."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> Bridge:
        threading.Thread(target=self.serve_forever, args=(0.1,), daemon=True, name="llm-bridge").start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
