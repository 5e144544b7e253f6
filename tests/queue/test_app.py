import json

from agentswarm.queue.app import create_app
from agentswarm.queue.names import celery_priority
from tests.support.probe_app import PROBE, app


def test_priority_mapping_is_inverted_and_clamped():
    assert [celery_priority(p) for p in (1, 5, 10)] == [0, 4, 9]
    assert celery_priority(0) == 0 and celery_priority(99) == 9


def test_config_has_the_transport_settings():
    conf = create_app().conf
    assert conf.broker_transport_options["priority_steps"] == list(range(10))
    assert conf.broker_transport_options["queue_order_strategy"] == "priority"
    vt = conf.broker_transport_options["visibility_timeout"]
    assert vt == conf.result_backend_transport_options["visibility_timeout"] >= 3 * 1800
    assert conf.worker_prefetch_multiplier == 1 and conf.accept_content == ["json"]
    assert set(conf.beat_schedule) == {"plan-tick", "reconcile-tick", "monitor-tick"}
    from agentswarm import tasks

    assert tasks.run_task.acks_late and tasks.run_task.reject_on_worker_lost
    assert tasks.merge_branch.acks_late and tasks.merge_branch.reject_on_worker_lost


def test_mixed_priorities_are_consumed_most_urgent_first(redis_client, celery_worker):
    order = [7, 3, 10, 1, 5, 2, 9, 4, 6, 8, 1, 10]
    for i, p in enumerate(order):
        app.send_task(PROBE, args=[f"p{p}-{i}"], priority=celery_priority(p))
    # No priority at all, as `celery call` sends it: it must not jump the queue.
    app.send_task(PROBE, args=["unset"])
    celery_worker(app="tests.support.probe_app", queues="work", pool="solo")
    import time

    deadline = time.monotonic() + 60
    while redis_client.llen("probe:order") < len(order) + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    got = [x.decode() for x in redis_client.lrange("probe:order", 0, -1)]
    assert len(got) == len(order) + 1, got
    prios = [int(x.split("-")[0][1:]) if x != "unset" else 10 for x in got]
    assert prios == sorted(prios), got
    assert got.index("unset") >= got.index(f"p10-{order.index(10)}")


def test_celery_call_without_priority_goes_last(redis_client, celery_worker, tmp_path):
    import os
    import subprocess
    import sys
    import time

    app.send_task(PROBE, args=["urgent"], priority=celery_priority(1))
    subprocess.run([sys.executable, "-m", "celery", "-A", "tests.support.probe_app", "call", PROBE,
                    "--args", json.dumps(["manual"])], check=True, capture_output=True, env=os.environ)
    app.send_task(PROBE, args=["normal"], priority=celery_priority(5))
    celery_worker(app="tests.support.probe_app", queues="work", pool="solo")
    deadline = time.monotonic() + 60
    while redis_client.llen("probe:order") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [x.decode() for x in redis_client.lrange("probe:order", 0, -1)] == ["urgent", "normal", "manual"]
