"""The settings, Redis, Postgres and the schema: is the record of the run there, and at the schema head?"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

from agentswarm.config import Settings, load_settings
from agentswarm.errors import ConfigError
from agentswarm.ops.doctor.ladder import Step, StepStatus, shown_url
from agentswarm.ops.services import INSTALL_HINT

CONNECT_TIMEOUT_S = 5
UPGRADE = "run `agentswarm db upgrade`"


def load(echo: Callable[[str], Any]) -> Settings | None:
    """The settings, or None after printing the failed step (a bad variable names itself)."""
    try:
        return load_settings()
    except ConfigError as exc:
        echo(Step("settings", StepStatus.fail, str(exc), "correct that variable in the environment or .env").line())
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_redis(ladder: Any) -> None:
    """REDIS_URL answers PING (the transport of every message)."""
    import redis

    url = ladder.settings.redis_url
    client = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S)
    try:
        started = time.monotonic()
        client.ping()
        ms = (time.monotonic() - started) * 1000
        version = client.info("server").get("redis_version", "?")
    except redis.RedisError as exc:
        ladder.fail("redis", f"REDIS_URL {shown_url(url)}: no answer ({_first_line(exc)})",
                    f"start Redis (`agentswarm check` starts a local redis-server) or correct REDIS_URL; {INSTALL_HINT}")
        return
    finally:
        client.close()
    ladder.ok("redis", f"{shown_url(url)} answers (Redis {version}, PING {ms:.1f} ms)")


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def check_postgres(ladder: Any) -> None:
    """DATABASE_URL's server answers and the database exists."""
    url = ladder.settings.database_url
    try:
        with psycopg.connect(_plain(url), connect_timeout=CONNECT_TIMEOUT_S) as conn:
            row = conn.execute("show server_version").fetchone()
            version = str(row[0]) if row else "?"
    except psycopg.OperationalError as exc:
        reason = _first_line(exc)
        if "does not exist" in reason:
            ladder.fail("postgres", f"DATABASE_URL {shown_url(url)}: {reason}",
                        f"`agentswarm check` creates the database, then {UPGRADE}")
        else:
            ladder.fail("postgres", f"DATABASE_URL {shown_url(url)}: cannot reach Postgres ({reason})",
                        "start Postgres (`agentswarm check` starts a local one) or correct DATABASE_URL; "
                        + INSTALL_HINT)
        return
    ladder.ok("postgres", f"{shown_url(url)} answers (PostgreSQL {version.split()[0]})")


def schema_state(url: str) -> tuple[str | None, set[str], set[str]]:
    """(the database's revision or None, the migrations' heads, every revision the migrations know)."""
    from alembic.script import ScriptDirectory

    from agentswarm.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    with psycopg.connect(_plain(url), connect_timeout=CONNECT_TIMEOUT_S) as conn:
        row = conn.execute("select to_regclass('alembic_version')").fetchone()
        table = row[0] if row else None
        rows = conn.execute("select version_num from alembic_version").fetchall() if table else []
    current = ",".join(sorted(r[0] for r in rows)) or None
    return current, set(script.get_heads()), known


def check_schema(ladder: Any) -> None:
    """The database is at the migrations' head (`make swarm` migrates; a run of another checkout may not)."""
    if not ladder.needs("schema", "postgres"):
        return
    try:
        current, heads, known = schema_state(ladder.settings.database_url)
    except psycopg.Error as exc:
        ladder.fail("schema", f"cannot read the schema revision ({_first_line(exc)})", UPGRADE)
        return
    head = ",".join(sorted(heads))
    if current is None:
        ladder.fail("schema", f"no schema yet (the migrations' head is {head})", UPGRADE)
    elif set(current.split(",")) == heads:
        ladder.ok("schema", f"at the head, {head}")
    elif all(rev in known for rev in current.split(",")):
        ladder.fail("schema", f"behind: the database is at {current}, the head is {head}", UPGRADE)
    else:
        ladder.fail("schema", f"the database is at {current}, which this checkout's migrations do not know "
                    f"(its head is {head}): a newer agentswarm migrated it",
                    "update this checkout, or point DATABASE_URL at a database of its own and " + UPGRADE)
