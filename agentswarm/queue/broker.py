"""Reading what the Redis broker holds, so that lost messages can be told from queued ones."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from agentswarm.queue.names import QUEUES

SEP = "\x06\x16"  # kombu's separator between a queue name and its priority level
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"  # kombu's zset: delivery tag -> when it was handed to a worker


def _task_id_of(payload: bytes | str, task_name: str) -> str | None:
    """The first argument of a `task_name` message; None for anything else (including non-object JSON)."""
    try:
        msg = json.loads(payload)
        if not isinstance(msg, dict):
            return None  # a list, number or string someone pushed: not a kombu message
        headers = msg.get("headers")
        if not isinstance(headers, dict) or headers.get("task") != task_name:
            return None
        body = msg["body"]
        properties = msg.get("properties")
        if isinstance(properties, dict) and properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
        if not isinstance(decoded, list) or not decoded or not isinstance(decoded[0], list):
            return None
        args = decoded[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding one queue's messages, one per priority level."""
    return [queue] + [f"{queue}{SEP}{p}" for p in range(1, 10)]


def queued_task_ids(client: redis.Redis, queue: str, task_name: str,
                    unacked_max_age_s: float | None = None) -> set[str]:
    """Ids (first argument) of `task_name` messages waiting in `queue` or reserved by a worker.

    With `unacked_max_age_s`, a message a worker took longer ago than that no longer counts: a worker killed with
    SIGKILL never acknowledges, and Redis would hold its messages for the whole visibility timeout (hours). Sending
    such a task again costs at most a duplicate message, which every handler recognises from Postgres.
    """
    found: set[str] = set()
    for key in queue_keys(queue):
        for raw in client.lrange(key, 0, -1):
            tid = _task_id_of(raw, task_name)
            if tid:
                found.add(tid)
    taken_at: dict[str, float] = {}
    if unacked_max_age_s is not None:
        rows: list[Any] = list(client.zrange(UNACKED_INDEX, 0, -1, withscores=True))
        taken_at = {_text(row[0]): float(row[1]) for row in rows}
    now = time.time()
    unacked: dict[Any, Any] = client.hgetall(UNACKED)
    for tag, raw in unacked.items():
        if unacked_max_age_s is not None and now - taken_at.get(_text(tag), now) > unacked_max_age_s:
            continue  # taken long ago by a worker that may be dead: not held any more
        try:
            entry = json.loads(raw)  # kombu stores [message, exchange, routing_key]
            message = entry[0] if isinstance(entry, list) and entry else None
        except (ValueError, IndexError, TypeError):
            continue
        if not isinstance(message, dict):
            continue
        tid = _task_id_of(json.dumps(message), task_name)
        if tid:
            found.add(tid)
    return found


def queue_lengths(client: redis.Redis, queues: Iterable[str] = QUEUES) -> dict[str, int]:
    """Messages waiting per queue (all priority levels)."""
    return {q: sum(client.llen(k) for k in queue_keys(q)) for q in queues}
