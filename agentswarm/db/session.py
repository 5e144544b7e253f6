"""Engine, sessions, and publishing after commit.

After-commit callbacks (`after_commit`) run once the session's outermost transaction has committed and ended
(a savepoint's commit is not the commit; a rollback drops them). Each runs on its own: one that raises (Redis
down) is logged with its own error and recorded as a `message.send_failed` event, never raised into the
committing code, never touches the session, and never stops the others. A task's message it failed to send is
pending in Postgres, so the monitor's recovery sweep (monitor/recovery.py) sends it again; a tick, beat sends anyway.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from agentswarm.db.events import record_event
from agentswarm.errors import ServiceUnavailable

_AFTER_COMMIT = "agentswarm_after_commit"  # session.info: callbacks of the open transaction
_COMMITTED = "agentswarm_committed"  # session.info: callbacks of the transaction that just committed
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


def after_commit(session: Session, fn: Callable[[], object], *, what: str = "", task_id: str | None = None) -> None:
    """Run `fn` once the session's transaction commits (never if it rolls back).

    Celery messages go out this way, so a worker can never receive an id whose row
    is not yet visible. `what` (e.g. "merge_branch") and `task_id` name it in a failure's log line and event.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(_Callback(fn, what or getattr(fn, "__name__", "?"), task_id))


@dataclass(frozen=True)
class _Callback:
    fn: Callable[[], object]
    what: str
    task_id: str | None


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: the callbacks wait for the real commit
    session.info[_COMMITTED] = session.info.pop(_AFTER_COMMIT, [])


@event.listens_for(Session, "after_transaction_end")
def _run_after_commit(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    for cb in session.info.pop(_COMMITTED, []):
        try:
            cb.fn()
        except Exception as exc:  # noqa: BLE001 - any failure: the commit stands and the other sends still go
            _send_failed(session, cb, exc)


def _send_failed(session: Session, cb: _Callback, exc: Exception) -> None:
    """Log and record a failed after-commit callback, in a session of its own (this one is done)."""
    error = f"{type(exc).__name__}: {exc}"
    later = "the monitor's recovery sends it again from Postgres" if cb.task_id else "the beat's next tick covers it"
    message = f"{cb.what} not sent after commit ({error}); {later}"
    log.error("%s", message, extra={"task_id": cb.task_id})
    try:
        with Session(session.get_bind()) as other, other.begin():
            record_event(other, "message.send_failed", message, task_id=cb.task_id, what=cb.what, error=error)
    except Exception as again:  # noqa: BLE001 - the log line above already says it
        log.warning("after commit: the failure of %s could not be recorded (%s)", cb.what, type(again).__name__)


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
