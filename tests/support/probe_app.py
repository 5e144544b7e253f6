"""The real Celery configuration plus one probe task on `work` that records the order it ran in."""

from __future__ import annotations

import os
import time

import redis

from agentswarm.queue.app import TASK_ROUTES, create_app

app = create_app()
PROBE = "tests.support.probe_app.probe"
app.conf.task_routes = {**TASK_ROUTES, PROBE: TASK_ROUTES["agentswarm.tasks.run_task"]}


@app.task(name=PROBE, acks_late=True)
def probe(label: str) -> None:
    """Append `label` to the Redis list `probe:order` (a label starting `slow` first takes 60 s)."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.rpush("probe:order", label)
    if label.startswith("slow"):
        time.sleep(60)
