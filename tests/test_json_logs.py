"""LOG_FORMAT=json: one JSON object a line, with the AgentSwarm task and run ids, from a real Celery worker (threads
pool, as the sandbox workers run) and from the `agentswarm` command; text stays the default."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from agentswarm.db.models import Run, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.logs import JsonFormatter, bound
from agentswarm.queue.send import send_run_task
from tests.support.env import ROOT


def _record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    record = logging.getLogger("agentswarm.test").makeRecord("agentswarm.test", logging.WARNING, __file__, 1, msg,
                                                             args, exc_info, extra=extra)
    return record


def test_a_line_carries_the_ids_bound_around_it():
    fmt = JsonFormatter()
    with bound(task_id="t123", run_id="r456"):
        line = json.loads(fmt.format(_record("took %s in %.1fs", "x", 2.25, attempt=3)))
    assert line["task_id"] == "t123" and line["run_id"] == "r456" and line["message"] == "took x in 2.2s"
    assert line["level"] == "WARNING" and line["logger"] == "agentswarm.test" and line["attempt"] == 3
    assert line["ts"].endswith("+00:00") and line["celery_id"] is None
    outside = json.loads(fmt.format(_record("no task")))
    assert outside["task_id"] is None and outside["run_id"] is None  # the keys are always there
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        text = fmt.format(_record("failed", exc_info=sys.exc_info()))
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exc"]


def test_an_events_line_carries_the_events_ids(db):
    from agentswarm.db.events import record_event
    from agentswarm.logs import use_json

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    use_json([handler])
    logger = logging.getLogger("agentswarm.events")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        task_id, run_id = _done_task(db)
        with session_scope(db) as s, bound(task_id="other", run_id="other-run"):
            record_event(s, "task.note", "hello", run_id=run_id, task_id=task_id)
            record_event(s, "hub.note", "no task")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    first, second = (json.loads(line) for line in lines)
    assert (first["task_id"], first["run_id"]) == (task_id, run_id) and "hello" in first["message"]
    assert (second["task_id"], second["run_id"]) == ("other", "other-run")  # no ids of its own: the bound ones


def _done_task(db) -> tuple[str, str]:
    with session_scope(db) as s:
        run = Run(max_tasks=10, max_tokens=10, max_dollars=1.0)
        s.add(run)
        s.flush()
        task = Task(run_id=run.id, description="d", branch="x", status=TaskStatus.complete)
        s.add(task)
        s.flush()
        return task.id, run.id


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_a_worker_logs_json_with_the_task_and_run_ids(db, celery_worker, pool):
    task_id, run_id = _done_task(db)
    worker = celery_worker(queues="work", pool=pool, concurrency=2, env={"LOG_FORMAT": "json"})
    send_run_task(task_id, 3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "not run: not-pending" not in worker.log():
        time.sleep(0.2)
    log = worker.log()
    lines = log[log.index("ready."):].splitlines()[1:]  # after the banner (printed, not logged): log lines only
    records = [json.loads(line) for line in lines if line.strip()]
    assert records and all({"ts", "level", "logger", "message", "task_id", "run_id"} <= set(r) for r in records)
    ours = [r for r in records if r["logger"] == "agentswarm.work.stage"]
    assert ours and ours[0]["message"] == f"task {task_id} not run: not-pending:complete", records
    assert ours[0]["task_id"] == task_id and ours[0]["run_id"] == run_id
    assert ours[0]["celery_task"] == "agentswarm.tasks.run_task" and ours[0]["celery_id"]
    received = next(r for r in records if "received" in r["message"])  # the consumer's line, outside any task
    assert received["task_id"] is None and received["logger"].startswith("celery")


def test_text_stays_the_default(db, celery_worker):
    task_id, _ = _done_task(db)
    env = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    worker = celery_worker(queues="work", env={**env, "LOG_FORMAT": "text"})
    send_run_task(task_id, 3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "not run: not-pending" not in worker.log():
        time.sleep(0.2)
    line = next(ln for ln in worker.log().splitlines() if "not run: not-pending" in ln)
    assert not line.lstrip().startswith("{") and "INFO" in line


def test_the_command_logs_json(db):
    env = {**os.environ, "LOG_FORMAT": "json", "PYTHONPATH": str(ROOT)}
    code = ("import logging, sys; from agentswarm.ops.cli import cli; "
            "cli.add_command(__import__('click').command('say')(lambda: logging.getLogger('agentswarm.x').info('hi'))); "
            "cli.main(['say'], standalone_mode=False)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    line = json.loads(out.stderr.strip().splitlines()[-1])
    assert line["message"] == "hi" and line["logger"] == "agentswarm.x" and line["task_id"] is None
    bad = subprocess.run([sys.executable, "-m", "agentswarm", "status"], env={**env, "LOG_FORMAT": "xml"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "LOG_FORMAT: must be one of text, json" in bad.stderr
