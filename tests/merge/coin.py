"""A flaky test's outside world, for tests of the gate: a coin served on a Unix socket the gate's sandboxes reach.

Every gate run starts from a fresh sandbox, so a command cannot remember an earlier run (that was the
hole tests/security/test_hostile_gate.py closes); what makes a real test flaky (time, load, a
service) is outside the tree. Here it is a socket in the hub's objects directory, which every gate
sandbox sees read-only (connecting needs no write access to the directory): the first toss of each
key fails, every later toss of it passes.
"""

from __future__ import annotations

import os
import shlex
import socket
import tempfile
import threading
from pathlib import Path

NAME = "coin.sock"
FAIL = "echo ' FAIL  src/x.test.ts > it > wobbles'"
_TOSS = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
         "s.sendall(sys.argv[2].encode() + b'\\n'); sys.exit(s.recv(1) != b'P')")


def toss_command(hub: Path, key: str = "echo once", fail: str = FAIL) -> str:
    """The shell check: passes, or runs `fail` and exits 1 the first time the snippet `key` prints a given key
    (the hub's Coin must be serving by the time it runs)."""
    objects = shlex.quote(str(Path(hub).resolve() / "objects"))
    return (f"k=$({key}); if (cd {objects} && python -c {shlex.quote(_TOSS)} {NAME} \"$k\"); "
            f"then exit 0; fi; {fail}; exit 1")


class Coin:
    """The server (a thread of the test process); `command` is the shell check a gate runs."""

    def __init__(self, hub: Path) -> None:
        self.objects = Path(hub).resolve() / "objects"
        self.tosses: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        short = Path(tempfile.mkdtemp(prefix="coin-"))  # a socket's path is short; it is renamed into place
        self._sock.bind(str(short / NAME))
        os.chmod(short / NAME, 0o777)  # the sandbox's user connects
        os.rename(short / NAME, self.objects / NAME)
        short.rmdir()
        self._sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                key = conn.makefile("rb").readline().decode().strip()
                conn.sendall(b"F" if key not in self.tosses else b"P")
                self.tosses.append(key)

    def command(self, key: str = "echo once", fail: str = FAIL) -> str:
        return toss_command(self.objects.parent, key, fail)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept
        except OSError:
            pass
        self._sock.close()
        (self.objects / NAME).unlink(missing_ok=True)
