"""A tiny npm registry on loopback for install tests: one packument and one tarball, built here.

It records every request it serves, so a test can tell that an install reached it (through the
orchestrator's proxy) rather than the internet.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, VERSION = "tiny-pkg", "1.0.0"


def _tarball() -> bytes:
    files = {"package/package.json": json.dumps({"name": NAME, "version": VERSION, "main": "index.js"}).encode(),
             "package/index.js": b"module.exports = 'tiny';\n"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class FakeRegistry:
    url: str  # ends with "/", like npm's registry setting
    tarball: bytes
    served: list[str] = field(default_factory=list)

    @property
    def tarball_url(self) -> str:
        return f"{self.url}{NAME}/-/{NAME}-{VERSION}.tgz"

    @property
    def integrity(self) -> str:
        return "sha512-" + base64.b64encode(hashlib.sha512(self.tarball).digest()).decode()

    def packument(self) -> dict:
        dist = {"tarball": self.tarball_url, "integrity": self.integrity,
                "shasum": hashlib.sha1(self.tarball).hexdigest()}
        return {"name": NAME, "dist-tags": {"latest": VERSION},
                "versions": {VERSION: {"name": NAME, "version": VERSION, "dist": dist}}}

    def project(self, extra_deps: dict[str, str] | None = None,
                extra_packages: dict[str, dict] | None = None) -> dict[str, str]:
        """package.json and package-lock.json (v3) of a project that depends on the tiny package."""
        deps = {NAME: VERSION, **(extra_deps or {})}
        packages = {"": {"name": "victim", "version": "1.0.0", "dependencies": deps},
                    f"node_modules/{NAME}": {"version": VERSION, "resolved": self.tarball_url,
                                             "integrity": self.integrity},
                    **(extra_packages or {})}
        lock = {"name": "victim", "version": "1.0.0", "lockfileVersion": 3, "requires": True, "packages": packages}
        manifest = {"name": "victim", "version": "1.0.0", "dependencies": deps}
        return {"package.json": json.dumps(manifest, indent=2), "package-lock.json": json.dumps(lock, indent=2)}


@contextmanager
def fake_registry() -> Iterator[FakeRegistry]:
    """A registry serving the tiny package on 127.0.0.1:<free port> while the block runs."""
    registry = FakeRegistry(url="", tarball=_tarball())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            registry.served.append(self.path)
            if self.path.endswith(".tgz"):
                body, kind = registry.tarball, "application/octet-stream"
            elif self.path.rstrip("/").endswith(NAME):
                body, kind = json.dumps(registry.packument()).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    registry.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
