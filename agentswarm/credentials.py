"""The services' generated credentials: the swarm's Postgres role and the Redis that `make swarm` starts.

Each lives in one JSON file under SERVICE_SECRETS_DIR (the directory 0700, the file 0600, written whole by
a rename), never in a log, a command line or a printed line. A file names the server it is for (host,
port, and for Postgres the database): its password is used only for that server, so a file left from
another setup never leaks into a connection to a different one. Standard library only (the settings read it).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def generate_password() -> str:
    """A fresh password (URL-safe, so it needs no quoting in a service URL)."""
    return secrets.token_urlsafe(24)


def write_secret(path: Path, data: dict[str, object]) -> None:
    """Write `data` as JSON readable by this user only (the directory made 0700), replacing any old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def read_secret(path: Path) -> dict[str, object] | None:
    """The file's data, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def postgres_role_file(secrets_dir: Path, database: str) -> Path:
    return Path(secrets_dir) / f"postgres-{database}.json"


def redis_file(secrets_dir: Path, port: int) -> Path:
    return Path(secrets_dir) / f"redis-{port}.json"


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def database_of(url: str) -> str:
    """The database a Postgres URL names (`postgres` when it names none)."""
    return urlsplit(_plain(url)).path.lstrip("/") or "postgres"


def with_credentials(url: str, user: str | None, password: str) -> str:
    """`url` with its user (kept when None) and password replaced."""
    parts = urlsplit(url)
    user = parts.username if user is None else user
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{quote(user or '', safe='')}:{quote(password, safe='')}@{netloc}"))


def _same_server(url: str, data: dict[str, object], default_port: int) -> bool:
    parts = urlsplit(_plain(url))
    return (str(parts.hostname or "127.0.0.1") == data.get("host")
            and (parts.port or default_port) == data.get("port"))


def swarm_database_url(database_url: str, secrets_dir: Path) -> str | None:
    """The URL of the swarm's own role for DATABASE_URL's server and database, when `prepare` made one."""
    data = read_secret(postgres_role_file(secrets_dir, database_of(database_url)))
    if not data or not _same_server(database_url, data, 5432) or data.get("database") != database_of(database_url):
        return None
    role, password = data.get("role"), data.get("password")
    if not isinstance(role, str) or not isinstance(password, str) or role == urlsplit(database_url).username:
        return None
    return with_credentials(database_url, role, password)


def swarm_redis_url(redis_url: str, secrets_dir: Path) -> str | None:
    """REDIS_URL with the password of the Redis that `make swarm` started there, when it has none of its own."""
    parts = urlsplit(redis_url)
    if parts.password or (parts.hostname or "127.0.0.1") not in LOOPBACK:
        return None
    data = read_secret(redis_file(secrets_dir, parts.port or 6379))
    if not data or not _same_server(redis_url, data, 6379) or not isinstance(data.get("password"), str):
        return None
    return with_credentials(redis_url, None, str(data["password"]))
