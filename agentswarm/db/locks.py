"""Postgres advisory locks: one beat tick at a time, one merge at a time, across machines."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session

from agentswarm.db.session import get_engine


def lock_key(name: str) -> int:
    """A stable 32-bit key for a lock name."""
    return zlib.crc32(f"agentswarm:{name}".encode())


def try_xact_lock(session: Session, name: str) -> bool:
    """Take a transaction-level advisory lock if free; released at commit/rollback or if the connection dies."""
    return bool(session.execute(text("select pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)}).scalar())


def xact_lock(session: Session, name: str) -> None:
    """Wait for a transaction-level advisory lock."""
    session.execute(text("select pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})


@contextmanager
def held_lock(name: str, url: str | None = None) -> Iterator[None]:
    """Hold a session-level advisory lock on a connection of its own, across many transactions.

    The merge queue's gated batches commit each decision as it is made (so no row stays locked while
    the gate runs) and keep the merge lock meanwhile. The lock conflicts with `xact_lock(name)`; it is
    released on exit, and by Postgres if the process dies (its connection closes with it).
    """
    conn = get_engine(url).connect()
    try:
        conn.execute(text("select pg_advisory_lock(:k)"), {"k": lock_key(name)})
        conn.commit()
        yield
        conn.execute(text("select pg_advisory_unlock(:k)"), {"k": lock_key(name)})
        conn.commit()
    except BaseException:
        conn.invalidate()  # closed, never back in the pool with the lock still held
        raise
    finally:
        conn.close()


@contextmanager
def try_held_lock(name: str, url: str | None = None) -> Iterator[bool]:
    """Like `held_lock`, but never waits: yields False (holding nothing) when another process has it."""
    conn = get_engine(url).connect()
    try:
        got = bool(conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": lock_key(name)}).scalar())
        conn.commit()
        yield got
        if got:
            conn.execute(text("select pg_advisory_unlock(:k)"), {"k": lock_key(name)})
            conn.commit()
    except BaseException:
        conn.invalidate()
        raise
    finally:
        conn.close()
