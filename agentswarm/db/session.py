"""Engine, sessions, and publishing after commit."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from agentswarm.errors import ServiceUnavailable

_AFTER_COMMIT = "agentswarm_after_commit"
log = logging.getLogger(__name__)
T = TypeVar("T")


@functools.lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    """One pooled engine per URL (default: settings.database_url)."""
    if url is None:
        from agentswarm.config import get_settings

        url = get_settings().database_url
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=40, future=True)


@functools.lru_cache(maxsize=8)
def _factory(url: str | None) -> sessionmaker[Session]:
    factory = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    return factory


def after_commit(session: Session, fn: Callable[[], object]) -> None:
    """Run `fn` once the session's transaction commits (never if it rolls back).

    Celery messages go out this way, so a worker can never receive an id whose row
    is not yet visible.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(fn)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    callbacks = session.info.pop(_AFTER_COMMIT, [])
    for fn in callbacks:
        fn()


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    session = _factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def retry_on_db_loss(fn: Callable[[], T], *, what: str, attempts: int = 8, first_s: float = 0.5,
                     max_s: float = 15.0) -> T:
    """Run `fn` (a whole unit of work, safe to repeat) again while Postgres is unreachable, with backoff.

    For work that exists only in this process's memory (a handoff whose sandbox is gone): a restart of Postgres
    must not lose it. Anything but a lost connection is raised at once.
    """
    for i in range(attempts):
        try:
            return fn()
        except (OperationalError, InterfaceError) as exc:
            if i == attempts - 1:
                raise
            wait = min(max_s, first_s * 2 ** i)
            log.warning("%s: Postgres unreachable (%s); again in %.1fs", what,
                        str(exc.orig or exc).strip().splitlines()[0][:200], wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def check_database(url: str | None = None) -> None:
    """Raise ServiceUnavailable with a one-line reason when Postgres does not answer."""
    try:
        with get_engine(url).connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        raise ServiceUnavailable(f"DATABASE_URL: cannot reach Postgres ({reason})") from None
