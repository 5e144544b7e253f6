"""The dependency install's only way out: a proxy the orchestrator serves that reaches the npm registry and nothing else.

The install runs in its own network namespace (only loopback: no host port, no host). For the length
of one install the orchestrator serves this proxy on a Unix socket in a fresh directory bound into the
sandbox; inside, FORWARDER opens 127.0.0.1:<port> in front of that socket (agent/bridge.py) and points
npm at it (`npm_config_proxy`, `npm_config_https_proxy`, and `HTTP(S)_PROXY` for other package
managers) before it starts the install command.
The proxy accepts only
- `CONNECT host:port` to the registry's host and port (an https registry): a tunnel of bytes, and
- `GET`/`HEAD http://host:port/...` to the registry (an http registry): one request per connection,
  sent upstream with `Connection: close`, its reply relayed;
anything else gets a 403. Names are resolved here, on the host: nothing in the sandbox picks an address.

npm's settings that name programs or files (`git`, `script-shell`, `shell`, `node-options`, the config
files, the cache, the registry) come from `npm_env`, environment that beats any project `.npmrc`; the
tree's own config files are removed from the checkout before anything runs (deps.py).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import agentswarm
from agentswarm.agent.bridge import pump

DEFAULT_REGISTRY = "https://registry.npmjs.org/"
SOCKET_ENV = "AGENTSWARM_REGISTRY_SOCKET"
HEAD_MAX = 64 * 1024
CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 30.0
_PACKAGE_PARENT = str(Path(agentswarm.__file__).resolve().parent.parent)
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade", "host"}
# Inside the sandbox, before the install: 127.0.0.1:<free port> -> the proxy's socket, npm pointed at it.
FORWARDER = (
    "import os,subprocess,sys\n"
    "sys.path.insert(0,sys.argv[1])\n"
    "from agentswarm.agent.bridge import Bridge\n"
    f"url=Bridge(os.environ[{SOCKET_ENV!r}]).start().url\n"
    "for k in ('npm_config_proxy','npm_config_https_proxy','HTTP_PROXY','HTTPS_PROXY','http_proxy','https_proxy'):\n"
    "    os.environ[k]=url\n"
    "c=subprocess.call(sys.argv[2:])\n"
    "sys.exit(128-c if c<0 else c)\n"
)


@functools.lru_cache(maxsize=1)
def host_npm() -> dict[str, str]:
    """The host npm's registry, global config file and prefix (the machine's, never a tree's), read once."""
    wanted = ("registry", "globalconfig", "prefix")
    npm = shutil.which("npm")
    if not npm:
        return {"registry": DEFAULT_REGISTRY}
    try:
        out = subprocess.run([npm, "config", "get", *wanted], capture_output=True, text=True, timeout=60,
                             cwd="/", stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return {"registry": DEFAULT_REGISTRY}
    found = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line) if out.returncode == 0 else {}
    values = {k: v.strip() for k, v in found.items() if k in wanted and v.strip() and v.strip() != "undefined"}
    if urlsplit(values.get("registry", "")).scheme not in ("http", "https"):
        values["registry"] = DEFAULT_REGISTRY
    return values


def registry_url(configured: str = "") -> str:
    """The registry the install may reach (NPM_REGISTRY, else the host npm's), ending with '/'."""
    url = configured.strip() or host_npm()["registry"]
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ValueError(f"NPM_REGISTRY: not an http(s) URL: {url!r}")
    return url if url.endswith("/") else url + "/"


def endpoint(url: str) -> tuple[str, str, int]:
    """(scheme, host in lower case, port) of a registry URL."""
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def npm_env(registry: str, home: str) -> dict[str, str]:
    """npm's settings for the install, as environment (it beats a project's .npmrc): no program, file or
    registry of the tree's choosing. The global config and prefix are the host npm's (read-only in the
    sandbox: a CA file, say); the user config is the sandbox's fresh home's. FORWARDER adds the proxy."""
    false = shutil.which("false") or "/bin/false"
    host = host_npm()
    env = {"npm_config_registry": registry, "npm_config_git": false, "npm_config_script_shell": "/bin/sh",
           "npm_config_shell": "/bin/sh", "npm_config_node_options": "", "npm_config_ignore_scripts": "true",
           "npm_config_userconfig": f"{home}/.npmrc", "npm_config_cache": f"{home}/.npm",
           "npm_config_update_notifier": "false", "npm_config_audit": "false", "npm_config_fund": "false"}
    env |= {f"npm_config_{key}": host[key] for key in ("globalconfig", "prefix") if key in host}
    return env


class RegistryProxy(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The proxy for one install: `with RegistryProxy(url) as proxy:` serves it on proxy.socket_path."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, registry: str) -> None:
        self.registry = registry
        self.endpoint = endpoint(registry)
        # A short path (AF_UNIX allows ~107 bytes), traversable by the sandbox's user but not listable.
        self.directory = Path(tempfile.mkdtemp(prefix="as-registry-"))
        self.directory.chmod(0o711)
        self.socket_path = str(self.directory / "registry.sock")
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(self.socket_path, _Handler)
        os.chmod(self.socket_path, 0o666)  # the sandbox's uid connects
        threading.Thread(target=self.serve_forever, args=(0.1,), daemon=True, name="registry-proxy").start()

    def command(self, argv: list[str], python: str) -> list[str]:
        """argv behind the forwarder that gives it (and npm) the way to this proxy."""
        return [python, "-I", "-S", "-c", FORWARDER, _PACKAGE_PARENT, *argv]

    def env(self, home: str) -> dict[str, str]:
        """The install's environment from the orchestrator: npm's settings and this proxy's socket."""
        return {**npm_env(self.registry, home), SOCKET_ENV: self.socket_path}

    def track(self, sock: socket.socket, add: bool = True) -> None:
        with self._open_lock:
            (self._open.add if add else self._open.discard)(sock)

    def close(self) -> None:
        """Stop serving, cut every connection still open, remove the socket's directory."""
        self.shutdown()
        self.server_close()
        with self._open_lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RegistryProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(socketserver.BaseRequestHandler):
    server: RegistryProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        self.server.track(client)
        upstream: socket.socket | None = None
        try:
            client.settimeout(CONNECT_TIMEOUT_S)
            head, rest = _read_head(client)
            method, target, headers = _parse(head)
            scheme, host, port = self.server.endpoint
            if method == "CONNECT" and scheme == "https" and _authority(target) == (host, port):
                upstream = self._connect(client, host, port)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                upstream.sendall(rest)
                _relay(client, upstream)
            elif method in ("GET", "HEAD") and scheme == "http" and _absolute(target) == (host, port) and not rest \
                    and not ({"content-length", "transfer-encoding"} & {k.lower() for k, _ in headers}):
                upstream = self._connect(client, host, port)
                upstream.sendall(_origin_request(method, target, headers, host, port))
                client.settimeout(None)
                pump(upstream, client)
            else:
                _reply(client, 403, f"only the registry {self.server.registry} is reachable from the install")
        except (OSError, ValueError):
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    self.server.track(sock, add=False)
                    _close(sock)

    def _connect(self, client: socket.socket, host: str, port: int) -> socket.socket:
        try:
            upstream = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError:
            _reply(client, 502, f"the registry {host}:{port} does not answer")
            raise
        upstream.settimeout(None)
        self.server.track(upstream)
        return upstream


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The request's head (through the blank line) and whatever bytes came after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(CHUNK)
        if not chunk or len(data) > HEAD_MAX:
            raise ValueError("no complete request head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, sep, v in (line.partition(":") for line in lines[1:]) if sep]
    return method.upper(), target, headers


def _authority(target: str) -> tuple[str, int] | None:
    """host:port of a CONNECT target (lower case), or None if it is not one."""
    parts = urlsplit(f"//{target}")
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None or parts.username or parts.path or parts.query:
        return None
    return parts.hostname.lower(), port


def _absolute(target: str) -> tuple[str, int] | None:
    """(host, port) of an absolute http:// request target, or None."""
    parts = urlsplit(target)
    try:
        port = parts.port or 80
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname or parts.username:
        return None
    return parts.hostname.lower(), port


def _origin_request(method: str, target: str, headers: list[tuple[str, str]], host: str, port: int) -> bytes:
    parts = urlsplit(target)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    kept = [f"{k}: {v}" for k, v in headers if k.lower() not in _HOP_HEADERS]
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *kept, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _reply(sock: socket.socket, status: int, why: str) -> None:
    body = (why + "\n").encode()
    reason = {403: "Forbidden", 502: "Bad Gateway"}[status]
    sock.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                 f"Connection: close\r\n\r\n".encode() + body)


def _relay(a: socket.socket, b: socket.socket) -> None:
    """Bytes both ways until both sides are done."""
    a.settimeout(None)
    back = threading.Thread(target=pump, args=(b, a), daemon=True)
    back.start()
    pump(a, b)
    back.join()




def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
