"""A dead worker's reserved messages go back to its queues, as its own clean shutdown would have put them.

Celery workers acknowledge late: a message a worker took sits in the broker's `unacked` hash until it
is acknowledged. A worker killed with SIGKILL never acknowledges, and kombu hands its messages on only
after the visibility timeout (hours); meanwhile the monitor counts them as held. Under `make swarm`
each queue has exactly one consuming process, so when supervisord restarts a worker, every message
taken from its queues before it died was the dead one's: each is put back at the head of its queue by
kombu's own restore, for its successor. Delivering a message twice is safe: every handler re-reads
Postgres and does nothing when the work is done or in other hands.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from typing import Any

TIMEOUT_S = 3  # Redis down: give up quickly, the supervisor's listener must not stall


def queues_of(command: str) -> list[str]:
    """The queues a Procfile command consumes (`celery ... worker -Q a,b`); empty for anything else."""
    argv = shlex.split(command)
    if "worker" not in argv:
        return []
    for flag in ("-Q", "--queues"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1].split(",")
    found = [a.split("=", 1)[1] for a in argv if a.startswith("--queues=")]
    return found[0].split(",") if found else []


def hand_back(redis_url: str, queues: Iterable[str], before: float, options: dict[str, Any]) -> int:
    """Put back on their queues the messages taken from `queues` and not acknowledged before `before`
    (a unix time); how many."""
    from kombu import Connection

    wanted = set(queues)
    conn = Connection(redis_url, connect_timeout=TIMEOUT_S, transport_options={
        **options, "socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S})
    try:
        conn.ensure_connection(max_retries=1)
        channel = conn.channel()
        client = channel.client
        restored = 0
        for tag in client.zrangebyscore(channel.unacked_index_key, "-inf", before):
            raw = client.hget(channel.unacked_key, tag)
            if raw is None:
                continue  # acknowledged meanwhile
            routing_key = json.loads(raw)[2]  # kombu stores [message, exchange, routing_key]
            if routing_key in wanted:
                channel.qos.restore_by_tag(tag, leftmost=True)
                restored += 1
        return restored
    finally:
        conn.release()
