"""Reading the broker tolerates whatever else sits in its Redis lists: non-object JSON is skipped, never raised."""

from __future__ import annotations

import json

from agentswarm.queue.broker import UNACKED, queue_keys, queued_task_ids
from agentswarm.queue.send import send_run_task

RUN_TASK = "agentswarm.tasks.run_task"


def test_non_object_messages_are_skipped(db, redis_client) -> None:
    send_run_task("real01", 5)
    junk = ["[1, 2, 3]", "42", '"a string"', "null", "true", "not json", "{}", '{"headers": [1]}',
            '{"headers": {"task": "agentswarm.tasks.run_task"}, "body": 7}',
            '{"headers": {"task": "agentswarm.tasks.run_task"}, "body": "e30=", '
            '"properties": {"body_encoding": "base64"}}',
            '{"headers": {"task": "agentswarm.tasks.run_task"}, "body": "[[\\"x\\"]]", "properties": [1]}']
    for key in (queue_keys("work")[0], queue_keys("work")[3]):
        redis_client.rpush(key, *junk)
    redis_client.hset(UNACKED, mapping={f"tag{i}": raw for i, raw in enumerate(
        junk + [json.dumps({"a": 1}), json.dumps([[1, 2]]), json.dumps(["str"]), json.dumps([])])})
    # The real message is found among the junk; the last junk entry is a well-formed message for task "x".
    assert queued_task_ids(redis_client, "work", RUN_TASK) == {"real01", "x"}


def test_a_message_taken_by_a_worker_killed_with_sigkill_stops_counting_as_held(db, redis_client, celery_worker):
    """A SIGKILLed worker never acknowledges: Redis keeps its message in `unacked` for the visibility timeout (hours).
    Past `unacked_max_age_s` it no longer counts as held, so the monitor sends the task again."""
    import signal
    import time

    from agentswarm.queue.app import app
    from tests.support.probe_app import PROBE
    from tests.support.waiting import wait_for

    worker = celery_worker(queues="work", app="tests.support.probe_app")
    app.send_task(PROBE, args=["slow-held"], queue="work")
    wait_for(lambda: redis_client.lrange("probe:order", 0, -1) == [b"slow-held"], timeout=20, every=0.1)
    assert redis_client.hlen(UNACKED) == 1  # acknowledged late: held while it runs
    worker.kill(signal.SIGKILL)
    assert queued_task_ids(redis_client, "work", PROBE) == {"slow-held"}  # held for hours, as far as Redis says
    assert queued_task_ids(redis_client, "work", PROBE, unacked_max_age_s=60) == {"slow-held"}  # taken just now
    time.sleep(1.2)
    assert queued_task_ids(redis_client, "work", PROBE, unacked_max_age_s=1) == set()
