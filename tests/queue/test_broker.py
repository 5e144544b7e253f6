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
