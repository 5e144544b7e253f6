"""The install's registry proxy: the registry's host and port, by CONNECT or one plain GET, and nothing else."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentswarm.sandbox.registry_proxy import RegistryProxy, npm_env, registry_url
from tests.sandbox.fake_registry import NAME, FakeRegistry, fake_registry


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    with fake_registry() as it:
        yield it


@pytest.fixture
def echo() -> Iterator[int]:
    """A TCP port on loopback that sends back what it receives (a stand-in for a TLS registry)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)


def _ask(proxy: RegistryProxy, request: bytes) -> bytes:
    """Send one request on a fresh connection to the proxy's socket; everything it answers until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(proxy.socket_path)
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_a_plain_get_reaches_an_http_registry_and_nothing_else(registry):
    port = int(registry.url.rstrip("/").rsplit(":", 1)[1])
    other = socket.create_server(("127.0.0.1", 0))
    with RegistryProxy(registry.url) as proxy:
        ok = _ask(proxy, f"GET {registry.url}{NAME} HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n\r\n".encode())
        assert ok.startswith(b"HTTP/1.") and b" 200 " in ok.split(b"\r\n")[0] and b'"dist-tags"' in ok
        refused = [
            f"GET http://127.0.0.1:{other.getsockname()[1]}/ HTTP/1.1\r\n\r\n",  # another host port
            f"GET http://localhost:{port}/{NAME} HTTP/1.1\r\n\r\n",  # the same port under another name
            f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n",  # a tunnel: only for an https registry
            f"POST {registry.url}{NAME} HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            f"GET {registry.url}{NAME} HTTP/1.1\r\n\r\nGET http://127.0.0.1:6379/ HTTP/1.1\r\n\r\n",  # a pipelined second
            f"GET /{NAME} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",  # not a proxy request
            "garbage\r\n\r\n",
        ]
        for request in refused:
            answer = _ask(proxy, request.encode())
            assert answer == b"" or answer.split(b"\r\n")[0] == b"HTTP/1.1 403 Forbidden", (request, answer[:200])
    other.close()
    assert registry.served == [f"/{NAME}"]


def test_connect_tunnels_to_an_https_registry_only(echo):
    with RegistryProxy(f"https://127.0.0.1:{echo}/") as proxy:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(proxy.socket_path)
            sock.sendall(f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\nHost: 127.0.0.1:{echo}\r\n\r\nearly".encode())
            answer = b""
            while b"early" not in answer:
                answer += sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200 ")
            sock.sendall(b" and late")
            got = b""
            while b"late" not in got:
                got += sock.recv(4096)
        for target in ("127.0.0.1:6379", "127.0.0.1:5432", f"localhost:{echo}", f"127.0.0.1:{echo}/x", "[::1]:443"):
            answer = _ask(proxy, f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
            assert answer.split(b"\r\n")[0] == b"HTTP/1.1 403 Forbidden", target
        assert _ask(proxy, f"GET http://127.0.0.1:{echo}/ HTTP/1.1\r\n\r\n".encode()).startswith(b"HTTP/1.1 403")


def test_close_cuts_open_tunnels_and_removes_the_socket(echo):
    proxy = RegistryProxy(f"https://127.0.0.1:{echo}/")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(proxy.socket_path)
    sock.sendall(f"CONNECT 127.0.0.1:{echo} HTTP/1.1\r\n\r\n".encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    directory = Path(proxy.socket_path).parent
    assert oct(directory.stat().st_mode & 0o777) == "0o711"  # traversable by the sandbox's uid, not listable
    proxy.close()
    assert sock.recv(4096) == b""  # the tunnel was cut
    sock.close()
    assert not directory.exists()


def test_the_registry_setting_and_npm_settings_from_the_orchestrator():
    assert registry_url("http://127.0.0.1:4873") == "http://127.0.0.1:4873/"
    assert registry_url("").startswith(("http://", "https://")) and registry_url("").endswith("/")
    for bad in ("ftp://x/", "registry.npmjs.org", "http:///x"):
        with pytest.raises(ValueError, match="NPM_REGISTRY"):
            registry_url(bad)
    env = npm_env("http://r/", "/home/sb")
    assert env["npm_config_registry"] == "http://r/" and env["npm_config_ignore_scripts"] == "true"
    assert env["npm_config_git"].endswith("/false") and env["npm_config_script_shell"] == "/bin/sh"
    assert env["npm_config_userconfig"] == "/home/sb/.npmrc" and env["npm_config_node_options"] == ""
