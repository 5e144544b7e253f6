"""Who else can reach the swarm's services: Postgres without a password, a superuser swarm, Redis without AUTH.

Warnings, not failures: a swarm runs on such a machine, but any process on it (code that got out of a
sandbox, another user's) could then rewrite the record of the run, run programs as the database server
(`COPY ... TO PROGRAM`) or put messages on the queues. Each warning's fix points at the page that says
how to close it. No password is ever sent by these probes: libpq is told to refuse any authentication
request (`require_auth=none`), so a connection succeeds only where the server asks for none.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg

from agentswarm.ops.services import answers_without_password

DOC = "docs/securing-services.md"
CONNECT_TIMEOUT_S = 5


def _parts(url: str) -> tuple[str, int, str, str]:
    """(host, port, user, database) of a Postgres URL."""
    u = urlsplit(url.replace("postgresql+psycopg://", "postgresql://", 1))
    return (u.hostname or "127.0.0.1", u.port or 5432, unquote(u.username or "postgres"),
            u.path.lstrip("/") or "postgres")


def connects_without_password(host: str, port: int, user: str, database: str) -> bool:
    """True when the server lets `user` in without asking for any credential (trust)."""
    try:
        with psycopg.connect(host=host, port=port, user=user, dbname=database, require_auth="none",
                             passfile=os.devnull, connect_timeout=CONNECT_TIMEOUT_S):
            return True
    except psycopg.Error:
        return False


def check_postgres_auth(ladder: Any) -> None:
    """DATABASE_URL's server asks for a password: as the swarm's user, and as `postgres`."""
    if not ladder.needs("postgres auth", "postgres"):
        return
    host, port, user, database = _parts(ladder.settings.database_url)
    open_to = [u for u in dict.fromkeys([user, "postgres"]) if connects_without_password(host, port, u, database)]
    if open_to:
        ladder.warn("postgres auth", f"{host}:{port} lets {' and '.join(open_to)} in without a password (trust "
                    "auth): so can any process on this machine",
                    f"set scram-sha-256 on pg_hba.conf's host and local lines and reload Postgres ({DOC}, Postgres)")
    else:
        ladder.ok("postgres auth", f"{host}:{port} asks {' and '.join(dict.fromkeys([user, 'postgres']))} for a password")


def check_postgres_role(ladder: Any) -> None:
    """The role the swarm connects as is not a superuser and cannot run programs on the server."""
    if not ladder.needs("postgres role", "postgres"):
        return
    url = ladder.settings.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            row = conn.execute("select current_user, rolsuper, rolcreaterole, "
                               "pg_has_role(current_user, 'pg_execute_server_program', 'member') "
                               "from pg_roles where rolname = current_user").fetchone()
    except psycopg.Error as exc:
        ladder.fail("postgres role", f"cannot read the swarm's role ({str(exc).strip().splitlines()[0]})",
                    "see the `postgres` step")
        return
    user, superuser, createrole, programs = row if row else ("?", False, False, False)
    powers = [what for what, has in (("a superuser", superuser), ("may create roles", createrole),
                                     ("may run server programs", programs)) if has]
    if powers:
        ladder.warn("postgres role", f"the swarm connects as {user}, which is {' and '.join(powers)}: code that "
                    "reaches Postgres as it can run programs on the server (COPY ... TO PROGRAM)",
                    f"run `agentswarm prepare`: it gives the swarm a role of its own (DATABASE_OWN_ROLE) ({DOC})")
    else:
        ladder.ok("postgres role", f"the swarm connects as {user} (not a superuser)")


def check_redis_auth(ladder: Any) -> None:
    """REDIS_URL's server refuses a client without a password."""
    if not ladder.needs("redis auth", "redis"):
        return
    u = urlsplit(ladder.settings.redis_url)
    host, port = u.hostname or "127.0.0.1", u.port or 6379
    if answers_without_password(host, port):
        ladder.warn("redis auth", f"{host}:{port} answers without a password: any process on this machine can "
                    "read and write the swarm's queues",
                    f"set requirepass (or an ACL user) and put the password in REDIS_URL ({DOC}, Redis)")
    else:
        ladder.ok("redis auth", f"{host}:{port} refuses clients without a password")
