"""Make sure Redis and Postgres answer: start them from local binaries when they are installed."""

from __future__ import annotations

import glob
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import psycopg

from agentswarm.config import Settings
from agentswarm.credentials import LOOPBACK, generate_password, read_secret, redis_file, write_secret
from agentswarm.errors import ConfigError, ServiceUnavailable
from agentswarm.sandbox.factory import backend_for

INSTALL_HINT = (
    "install them (Debian/Ubuntu: `apt-get install redis-server postgresql`; macOS: "
    "`brew install redis postgresql@16`) or run `docker compose up -d redis postgres`"
)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def ensure_redis(url: str, secrets_dir: Path | None = None) -> str:
    """Return how Redis was found ('running'/'started ...'), starting redis-server if needed.

    With `secrets_dir`, a Redis started here requires a password (`requirepass`): REDIS_URL's own, else one
    generated and kept there (`credentials.redis_file`), which every process then adds to REDIS_URL. The
    password reaches redis-server on its stdin, never its command line.
    """
    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 6379
    if _port_open(host, port):
        if secrets_dir is not None and answers_without_password(host, port):
            redis_file(secrets_dir, port).unlink(missing_ok=True)  # not the Redis we started: forget its password
        return "running"
    if host not in LOOPBACK or not shutil.which("redis-server"):
        raise ServiceUnavailable(f"REDIS_URL: nothing answers at {host}:{port}; {INSTALL_HINT}")
    conf = ["bind 127.0.0.1", f"port {port}", "daemonize yes", 'save ""', "appendonly no"]
    how = "started"
    if u.password:
        conf.append(f"requirepass {_quoted(unquote(u.password))}")
        how += ", requiring REDIS_URL's password"
    elif secrets_dir is not None:
        conf.append(f"requirepass {_quoted(_redis_password(host, port, secrets_dir))}")
        how += f", requiring a password (kept in {redis_file(secrets_dir, port)})"
    subprocess.run(["redis-server", "-"], input="\n".join(conf) + "\n", text=True, check=False, capture_output=True)
    if not _wait(host, port, 10):
        raise ServiceUnavailable(f"REDIS_URL: started redis-server but {host}:{port} does not answer")
    return how


def answers_without_password(host: str, port: int) -> bool:
    """True when the Redis at host:port answers PING from a client that gives no password."""
    import redis

    client = redis.Redis(host=host, port=port, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def check_redis_password(url: str, secrets_dir: Path) -> None:
    """ServiceUnavailable (one line: what to do) when the Redis at `url` wants a password `url` does not carry."""
    import redis

    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 6379
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise ServiceUnavailable(
            f"REDIS_URL: the Redis at {host}:{port} wants a password REDIS_URL does not carry (one that `make swarm` "
            f"started keeps it in {redis_file(secrets_dir, port)}, gone if `make clean` removed var/): put its "
            f"password in REDIS_URL, or stop that redis-server (`pgrep -af 'redis-server {host}:{port}'`) and "
            "run again") from None
    except redis.RedisError:
        pass  # not a credentials problem: the steps after say what is wrong
    finally:
        client.close()


def _redis_password(host: str, port: int, secrets_dir: Path) -> str:
    """The password kept for the Redis at this port (made and kept first when there is none)."""
    path = redis_file(secrets_dir, port)
    old = read_secret(path) or {}
    if old.get("host") == host and old.get("port") == port and isinstance(old.get("password"), str):
        return str(old["password"])
    password = generate_password()
    write_secret(path, {"host": host, "port": port, "password": password})
    return password


def _quoted(value: str) -> str:
    """A value for redis.conf: double-quoted, backslashes and quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _start_postgres() -> bool:
    if shutil.which("pg_ctlcluster"):
        for version in sorted(glob.glob("/etc/postgresql/*"), reverse=True):
            v = version.rsplit("/", 1)[-1]
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", v, "main", "start"],
                           check=False, capture_output=True)
            return True
    if shutil.which("brew"):
        subprocess.run(["brew", "services", "start", "postgresql@16"], check=False, capture_output=True)
        return True
    return False


def ensure_postgres(url: str) -> str:
    """Return 'running'/'started'; also create the database named in the URL if it is missing."""
    u = urlparse(url.replace("postgresql+psycopg://", "postgresql://"))
    host, port = u.hostname or "127.0.0.1", u.port or 5432
    how = "running"
    if not _port_open(host, port):
        if host not in ("127.0.0.1", "localhost") or not _start_postgres() or not _wait(host, port, 20):
            raise ServiceUnavailable(f"DATABASE_URL: nothing answers at {host}:{port}; {INSTALL_HINT}")
        how = "started"
    dbname = (u.path or "/").lstrip("/") or "postgres"
    admin = u._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
            if not exists:
                conn.execute(f'create database "{dbname}"')
                how += ", database created"
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(f"DATABASE_URL: cannot connect to Postgres ({first})") from None
    return how


def check_sandboxes(settings: Settings) -> str:
    """How agents will be sandboxed; IsolationUnavailable (one line: why, what to install) if they cannot be."""
    if settings.sandbox_backend.value != "local":
        return f"{settings.sandbox_backend.value} (cloud sandboxes)"
    if settings.sandbox_isolation.value == "none":
        return "local, UNISOLATED (SANDBOX_ISOLATION=none): agents run with this machine's user and network"
    backend_for(settings)  # builds the backend, which checks that bubblewrap can make its namespaces
    return f"local, isolated with bubblewrap (uid {settings.sandbox_uid} when started as root, no network)"


NODE_TOOLS = ("npx", "npm", "node")


def check_reconciler(settings: Settings) -> str:
    """What the reconciler checks main with; a missing tool is named (with its Debian package), not fatal:
    the reconciler reports such a check as "cannot run" and a run is not held by it."""
    if not settings.reconcile_commands:
        return "nothing to check (RECONCILE_COMMANDS=[]): main is never checked"
    missing = []
    for command in filter(None, [settings.reconcile_install, *settings.reconcile_commands]):
        try:
            tool = shlex.split(command)[0]
        except (ValueError, IndexError):
            continue
        if "/" not in tool and shutil.which(tool) is None:
            missing.append(f"{tool} (Debian: apt-get install nodejs npm)" if tool in NODE_TOOLS else tool)
    if settings.reconcile_page and not (shutil.which("chromium") or shutil.which("chromium-browser")):
        missing.append("chromium for the page check (Debian: apt-get install chromium)")
    page = " + the page in headless Chromium" if settings.reconcile_page else ""
    line = (f"{'; '.join(settings.reconcile_commands)}{page}, every {settings.reconcile_interval_s:g}s; "
            f"red: {settings.reconcile_on_red.value}")
    return line + (f" -- MISSING {', '.join(dict.fromkeys(missing))}: those checks will report cannot-run"
                   if missing else "")


def check_gate(settings: Settings) -> str:
    """What guards main; ConfigError naming the missing tool (and its Debian package) if the gate cannot run."""
    if settings.gate.value == "off":
        return "off: main moves to whatever merges cleanly (GATE=off)"
    commands = [settings.gate_install, *settings.gate_commands, *settings.gate_full_commands]
    for command in filter(None, commands):
        try:
            tool = shlex.split(command)[0]
        except (ValueError, IndexError):
            continue
        if "/" not in tool and shutil.which(tool) is None:
            hint = " (Debian: apt-get install nodejs npm)" if tool in NODE_TOOLS else ""
            raise ConfigError(f"GATE={settings.gate.value} runs `{command}`, but {tool!r} is not installed{hint}; "
                              "install it, or set GATE=off to land without checks")
    presubmit = "presubmit on" if settings.gate_presubmit else "presubmit off"
    lanes = (f"up to {settings.gate_parallel} in the gate at once" if settings.gate_parallel > 1 else "one at a time")
    runner = "gate workers" if settings.gate_runner.value == "queue" else "the merge worker's threads"
    return (f"{settings.gate.value} (batches of up to {settings.gate_batch_max}, {lanes}, run by {runner}; "
            f"{presubmit}): {'; '.join(settings.gate_commands)}")
