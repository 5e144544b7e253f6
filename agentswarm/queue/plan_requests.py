"""Plan requests: the planner runs when something gives it work, not only on its beat.

A landing, a task that ends and a feature that becomes ready call `request_plan_after_commit`: once the
session commits, a plan tick is sent early. Requests coalesce through two Redis markers and the planner's
session-level advisory lock in Postgres (`PLANNER_LOCK`, held across the model call):

- `wanted` says "plan again". Every requester and every tick sets it first, then looks at the lock. The tick
  that takes the lock clears it before it reads anything; the one that releases the lock takes it afterwards
  and, if it was set, sends one request. A requester that saw the lock held set `wanted` before that release,
  so the holder finds it: a request arriving during a model call makes exactly one follow-up pass, never zero.
- `queued` says "a requested tick is on the queue and has not started". Set with NX and the message's own
  expiry, so a burst sends one message; the tick clears it when it starts, before it reads anything, so a
  later event sends the next one. An expired message is dropped by the worker, and its marker with it.

So a burst makes at most one message waiting and one pass in flight. Redis lost or flushed loses at most a
request, which the beat tick (the safety net) makes up within PLAN_INTERVAL_S; Postgres remains the truth.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from agentswarm.config import Settings, get_settings
from agentswarm.db.locks import lock_key
from agentswarm.db.session import after_commit, get_engine
from agentswarm.queue.names import PLAN_TICK
from agentswarm.queue.send import send_tick

log = logging.getLogger(__name__)

PLANNER_LOCK = "planner"  # the session-level lock only the planning tick holds (planning/planner.py)
QUEUED = "agentswarm:plan:queued"
WANTED = "agentswarm:plan:wanted"
WANTED_TTL_S = 3600  # a note nobody took (its tick died): the next tick clears it anyway
_REGISTERED = "agentswarm_plan_requested"  # session.info: the transaction a request is registered for


@functools.lru_cache(maxsize=8)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


def planner_busy(database_url: str) -> bool:
    """True while some process holds the planner lock (in this database)."""
    with get_engine(database_url).connect() as conn:
        return bool(conn.execute(text(
            "select exists(select 1 from pg_locks where locktype = 'advisory' and granted"
            " and database = (select oid from pg_database where datname = current_database())"
            " and classid = 0 and objid::bigint = :k and objsubid = 1)"), {"k": lock_key(PLANNER_LOCK)}).scalar())


def request_plan(settings: Settings | None = None) -> bool:
    """Ask for a planning pass now; True if this call sent the message (False: one queued or in flight covers it).

    Never raises: a request that cannot be made is logged, and the beat plans within PLAN_INTERVAL_S.
    """
    settings = settings or get_settings()
    try:
        client = _redis(settings.redis_url)
        client.set(WANTED, 1, ex=WANTED_TTL_S)
        if planner_busy(settings.database_url):
            return False  # the holder finds `wanted` after it releases the lock
        ttl = max(1, round(settings.plan_interval_s))
        if not client.set(QUEUED, 1, nx=True, ex=ttl):
            return False  # a requested tick that has not started yet will read what we committed
        send_tick(PLAN_TICK, expires_s=ttl, requested=True)
        return True
    except Exception as exc:  # runs after a commit: must not stop the caller's other after-commit sends
        log.warning("plan request not sent (%s: %s); the beat will plan", type(exc).__name__, exc)
        return False


def request_plan_after_commit(session: Session, settings: Settings | None = None) -> None:
    """Request a planning pass once the session commits (once per transaction, however often it is called)."""
    current = session.get_transaction()
    if current is not None and session.info.get(_REGISTERED) is current:
        return
    session.info[_REGISTERED] = current

    def send() -> None:
        session.info.pop(_REGISTERED, None)
        request_plan(settings)

    after_commit(session, send, what="plan request")


# -- the tick's side --------------------------------------------------------------------------------


def _quietly(what: str, fn: Callable[[], object]) -> bool:
    """A marker operation; Redis failing is logged (the beat still plans), never raised."""
    try:
        return bool(fn())
    except redis.RedisError as exc:
        log.warning("plan request marker: %s failed (%s)", what, exc)
        return False


def tick_started(settings: Settings, *, requested: bool) -> None:
    """A tick begins: a requested one frees `queued` (later events send anew); every tick notes `wanted`.

    Call it before trying the planner lock.
    """
    client = _redis(settings.redis_url)
    if requested:
        _quietly("clear queued", lambda: client.delete(QUEUED))
    _quietly("note wanted", lambda: client.set(WANTED, 1, ex=WANTED_TTL_S))


def lock_taken(settings: Settings) -> None:
    """This tick holds the planner lock and reads the state next: every request made so far is covered."""
    client = _redis(settings.redis_url)
    _quietly("clear wanted", lambda: client.delete(WANTED))


def lock_released(settings: Settings) -> bool:
    """Call after releasing the planner lock: sends the follow-up pass if anyone asked meanwhile."""
    client = _redis(settings.redis_url)
    if _quietly("take wanted", lambda: client.delete(WANTED)):
        return request_plan(settings)
    return False
