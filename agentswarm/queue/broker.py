"""Reading what the Redis broker holds, so that lost messages can be told from queued ones."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable

import redis

from agentswarm.queue.names import QUEUES

SEP = "\x06\x16"  # kombu's separator between a queue name and its priority level
UNACKED = "unacked"


def _task_id_of(payload: bytes | str, task_name: str) -> str | None:
    try:
        msg = json.loads(payload)
        if msg.get("headers", {}).get("task") != task_name:
            return None
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def queue_keys(queue: str) -> list[str]:
    """The Redis lists holding one queue's messages, one per priority level."""
    return [queue] + [f"{queue}{SEP}{p}" for p in range(1, 10)]


def queued_task_ids(client: redis.Redis, queue: str, task_name: str) -> set[str]:
    """Ids (first argument) of `task_name` messages waiting in `queue` or reserved by a worker."""
    found: set[str] = set()
    for key in queue_keys(queue):
        for raw in client.lrange(key, 0, -1):
            tid = _task_id_of(raw, task_name)
            if tid:
                found.add(tid)
    for raw in client.hvals(UNACKED):
        try:
            message = json.loads(raw)[0]
        except (ValueError, IndexError, TypeError):
            continue
        tid = _task_id_of(json.dumps(message), task_name)
        if tid:
            found.add(tid)
    return found


def queue_lengths(client: redis.Redis, queues: Iterable[str] = QUEUES) -> dict[str, int]:
    """Messages waiting per queue (all priority levels)."""
    return {q: sum(client.llen(k) for k in queue_keys(q)) for q in queues}
