"""Postgres advisory locks: one beat tick at a time, one merge at a time, across machines."""

from __future__ import annotations

import zlib

from sqlalchemy import text
from sqlalchemy.orm import Session


def lock_key(name: str) -> int:
    """A stable 32-bit key for a lock name."""
    return zlib.crc32(f"agentswarm:{name}".encode())


def try_xact_lock(session: Session, name: str) -> bool:
    """Take a transaction-level advisory lock if free; released at commit/rollback or if the connection dies."""
    return bool(session.execute(text("select pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)}).scalar())


def xact_lock(session: Session, name: str) -> None:
    """Wait for a transaction-level advisory lock."""
    session.execute(text("select pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
