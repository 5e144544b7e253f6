"""The swarm's own Postgres role: what `prepare` makes when DATABASE_URL's user is a superuser.

Invariants: the role can log in and owns the swarm's database and every table, view, sequence and type in
its `public` schema, so it runs the migrations and all the swarm's work; it is never a superuser, cannot
create roles or databases, replicate or bypass row security, and is no member of the roles that read or
write server files or run server programs (`COPY ... TO PROGRAM` fails for it). Its password is generated
once, kept in SERVICE_SECRETS_DIR (mode 0600) and sent to the server only as a SCRAM verifier, so the
plain password is never in a statement the server could log. Running it again changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from agentswarm.config import Settings
from agentswarm.credentials import (
    database_of,
    generate_password,
    postgres_role_file,
    read_secret,
    write_secret,
)
from agentswarm.errors import ConfigError, ServiceUnavailable

ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
SERVER_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
ALTER = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
# Every relation in `public` the role does not own; sequences last (one a table owns follows the table).
NOT_OWNED = """
select c.relkind, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public' and c.relkind = any(%s) and pg_get_userbyid(c.relowner) <> %s
  and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid
                  and d.deptype in ('a', 'i') and c.relkind = 'S')
order by c.relkind = 'S', c.relname
"""
TYPES_NOT_OWNED = """
select t.typname from pg_type t join pg_namespace n on n.oid = t.typnamespace
where n.nspname = 'public' and t.typtype in ('e', 'd') and pg_get_userbyid(t.typowner) <> %s
"""


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def ensure_swarm_role(settings: Settings) -> str:
    """Make (or bring back in line) the swarm's role; one line saying whom the swarm connects as."""
    admin = settings.database_admin_url
    if not settings.database_own_role:
        return "the swarm connects as DATABASE_URL's user (DATABASE_OWN_ROLE=false)"
    try:
        with psycopg.connect(_plain(admin), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("select current_user, rolsuper from pg_roles where rolname = current_user").fetchone()
            user, superuser = (str(row[0]), bool(row[1])) if row else ("?", False)
            if not superuser:
                return f"the swarm connects as {user}, DATABASE_URL's user (not a superuser)"
            role = settings.database_role or database_of(admin)
            if role == user:
                raise ConfigError(f"DATABASE_ROLE: the swarm's role would be {role!r}, DATABASE_URL's own user, a "
                                  "superuser; set DATABASE_ROLE to another name (or DATABASE_URL to another user)")
            path, password = _keep_password(settings, role)
            _set_role(conn, role, password)
            _own_everything(conn, role, database_of(admin))
    except psycopg.Error as exc:
        text = str(exc).strip()
        raise ServiceUnavailable(f"DATABASE_URL: cannot make the swarm's role ({text.splitlines()[0] if text else exc})"
                                 ) from None
    return f"the swarm connects as {role} (not a superuser; its password is in {path})"


def _keep_password(settings: Settings, role: str) -> tuple[Path, str]:
    """The role's file and password: written first (a new password) unless it holds one for this server and role."""
    admin = urlsplit(_plain(settings.database_admin_url))
    database = database_of(settings.database_admin_url)
    path = postgres_role_file(settings.service_secrets_dir, database)
    data = {"host": admin.hostname or "127.0.0.1", "port": admin.port or 5432, "database": database, "role": role}
    old = read_secret(path) or {}
    same = all(old.get(k) == v for k, v in data.items()) and isinstance(old.get("password"), str)
    password = str(old["password"]) if same else generate_password()
    write_secret(path, {**data, "password": password})
    return path, password


def _set_role(conn: psycopg.Connection, role: str, password: str) -> None:
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
    verb = "ALTER ROLE {} WITH " if exists else "CREATE ROLE {} WITH "
    conn.execute(sql.SQL(verb + ATTRIBUTES + " PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
    for granted in SERVER_ROLES:
        if conn.execute("select pg_has_role(%s, %s, 'member')", (role, granted)).fetchone() == (True,):
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(granted), sql.Identifier(role)))


def _own_everything(conn: psycopg.Connection, role: str, database: str) -> None:
    """The role owns the database, may create in `public`, and owns what is in it (migrations it did not run)."""
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), ident))
    conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(ident))
    for kind, name in conn.execute(NOT_OWNED, (list(ALTER), role)).fetchall():
        conn.execute(sql.SQL(f"ALTER {ALTER[kind]} {{}} OWNER TO {{}}").format(sql.Identifier("public", name), ident))
    for (name,) in conn.execute(TYPES_NOT_OWNED, (role,)).fetchall():
        conn.execute(sql.SQL("ALTER TYPE {} OWNER TO {}").format(sql.Identifier("public", name), ident))
