"""The job-system verbs on the real stack (Postgres, Redis, a git hub): tasks, show, retry, pause, resume, logs,
cancel-task and add-task, with ids abbreviated as git does and one-line errors."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import select, update

from agentswarm.config import get_settings
from agentswarm.db.models import Event, Feature, HandoffRecord, LiveStep, MergeAttempt, Run, Task
from agentswarm.db.session import session_scope
from agentswarm.ops.cli import main
from agentswarm.queue.broker import queued_task_ids
from agentswarm.queue.names import RUN_TASK
from tests.support.tasks import add_tasks


@pytest.fixture
def run_id(active_run):
    return active_run


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `agentswarm ARGV` in-process; (exit code, stdout, stderr)."""
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _set(db, task_id: str, **values) -> None:
    with session_scope(db) as s:
        s.execute(update(Task).where(Task.id == task_id).values(**values))


def _line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_add_task_fix_with_key_and_a_twin_returns_the_first(run_id, db, capsys, redis_client):
    code, out, _ = cli(capsys, "add-task", "Fix the HUD overlap", "--scope", "src/ui/hud.ts", "--kind", "fix",
                       "--priority", "1", "--key", "hud-overlap")
    assert code == 0 and "added (fix, priority 1)" in out
    task_id = out.split()[1]
    code, out, _ = cli(capsys, "add-task", "Fix the HUD overlap again", "--kind", "fix", "--key", "hud-overlap")
    assert code == 0 and out.startswith(f"task {task_id} already added with key hud-overlap")
    with session_scope(db) as s:
        rows = s.scalars(select(Task).where(Task.run_id == run_id)).all()
    assert [(t.id, t.kind, t.priority, t.request_key, t.scope) for t in rows] == [
        (task_id, "fix", 1, "hud-overlap", ["src/ui/hud.ts"])]
    assert task_id in queued_task_ids(redis_client, "work", RUN_TASK)
    code, _, err = cli(capsys, "add-task", "x", "--scope", "../../etc/passwd")
    assert code == 2 and "leaves the repository" in _line(err)


def test_tasks_lists_and_filters(run_id, db, capsys):
    ids = add_tasks(db, run_id, [["src/a.ts"], ["src/b.ts"], ["src/c.ts"]])
    _set(db, ids[0], status="failed", kind="fix")
    code, out, _ = cli(capsys, "tasks")
    assert code == 0 and all(t in out for t in ids) and out.splitlines()[0].split()[:3] == ["id", "state", "kind"]
    code, out, _ = cli(capsys, "tasks", "--state", "failed")
    assert ids[0] in out and ids[1] not in out
    code, out, _ = cli(capsys, "tasks", "--kind", "manual", "--limit", "1")
    assert len(out.splitlines()) == 2 and ids[0] not in out
    code, out, _ = cli(capsys, "tasks", "--state", "failed", "--json")
    assert [r["id"] for r in json.loads(out)] == [ids[0]]
    code, _, err = cli(capsys, "tasks", "--state", "bogus")
    assert code == 2 and "'bogus' is not one of pending" in err and "Traceback" not in err


def _seed_history(db, task_id: str) -> None:
    """Two attempts handed off and a gated merge attempt rejected with the gate's results."""
    transcript = "\n".join(json.dumps(e) for e in [
        {"t": 1.0, "kind": "note", "event": "checkout", "branch": f"swarm/{task_id}"},
        {"t": 2.0, "kind": "assistant", "step": 1, "content": "Writing the file",
         "tool_calls": [{"id": "c1", "name": "write_file", "arguments": '{"path": "src/a.ts"}'}],
         "prompt_tokens": 10, "completion_tokens": 5},
        {"t": 3.0, "kind": "tool", "id": "c1", "name": "write_file", "result": "wrote src/a.ts"},
        {"t": 4.0, "kind": "outcome", "status": "complete"},
    ]) + "\n"
    with session_scope(db) as s:
        for attempt, status in ((1, "failed"), (2, "complete")):
            s.add(HandoffRecord(task_id=task_id, attempt=attempt, status=status, summary=f"attempt {attempt}",
                                error="tsc failed" if status == "failed" else None, commits=["abc"],
                                files_changed=["src/a.ts"], insertions=3, transcript=transcript, llm_calls=1))
        s.add(MergeAttempt(task_id=task_id, branch=f"swarm/{task_id}", strategy="rebase", status="rejected",
                           batch_id="batch1", position=0, gate={
                               "result": "red", "seconds": 12.0, "tests": ["src/a.test.ts > a > adds"],
                               "commands": [{"command": "npx tsc --noEmit", "exit_code": 0, "duration_s": 4.0,
                                             "timed_out": False},
                                            {"command": "npx vitest run", "exit_code": 1, "duration_s": 8.0,
                                             "timed_out": False}]}))
    _set(db, task_id, attempts=2, status="complete")


def test_show_by_prefix_has_attempts_merges_gate_events_and_transcript(run_id, db, capsys):
    [tid] = add_tasks(db, run_id, [["src/a.ts"]])
    _seed_history(db, tid)
    code, out, _ = cli(capsys, "show", tid[:5])
    assert code == 0, out
    assert out.startswith(f"task {tid} · manual · complete")
    assert "#1 failed" in out and "tsc failed" in out and "#2 complete" in out
    assert "rejected  rebase batch batch1 #0" in out and "gate red (12s)" in out
    assert "exit 1: npx vitest run" in out and "failing: src/a.test.ts > a > adds" in out
    assert "transcript of attempt 2: 4 steps" in out and "write_file(" in out
    assert "task.created" in out
    code, out, _ = cli(capsys, "show", tid, "--json")
    d = json.loads(out)
    assert d["merges"][0]["gate"]["commands"][1]["exit"] == 1 and d["transcript"]["kinds"]["tool"] == 1


def test_prefix_ids_unknown_and_ambiguous_are_one_line_errors(run_id, db, capsys):
    with session_scope(db) as s:
        for tid in ("abc111", "abc222", "def333"):
            s.add(Task(id=tid, run_id=run_id, description="d", branch=f"swarm/{tid}", status="failed"))
    for verb in ("show", "retry", "logs", "cancel-task"):
        code, _, err = cli(capsys, verb, "zzz9")
        assert code == 2 and _line(err) == "agentswarm: no task zzz9", (verb, err)
        code, _, err = cli(capsys, verb, "abc")
        assert code == 2 and _line(err) == ("agentswarm: abc is ambiguous: it begins abc111, abc222; "
                                            "give more characters"), (verb, err)
    code, _, err = cli(capsys, "show", "a%")
    assert code == 2 and "is not a task id" in _line(err)
    code, out, _ = cli(capsys, "show", "def")
    assert code == 0 and out.startswith("task def333")


def test_retry_sends_a_failed_task_back_with_fresh_attempts(run_id, db, capsys, redis_client):
    [tid] = add_tasks(db, run_id, [["src/a.ts"]], feature_ids=["ui-001"])
    redis_client.flushdb()
    _set(db, tid, status="failed", attempts=3, max_attempts=3, enqueued_at=None, error="out of attempts")
    with session_scope(db) as s:
        s.get(Feature, "ui-001").status = "failed"
    code, out, _ = cli(capsys, "retry", tid[:6])
    assert code == 0 and f"task {tid} pending again (attempt 4 of up to 6, sent to a worker)" in out
    with session_scope(db) as s:
        t = s.get(Task, tid)
        assert (t.status, t.error, t.max_attempts) == ("pending", None, 6)
        assert s.get(Feature, "ui-001").status == "in_progress"
        assert s.scalar(select(Event.id).where(Event.task_id == tid, Event.kind == "task.retried"))
    assert tid in queued_task_ids(redis_client, "work", RUN_TASK)
    code, _, err = cli(capsys, "retry", tid)
    assert code == 2 and _line(err) == f"agentswarm: task {tid} is pending; only failed or blocked tasks can be retried"


def test_pause_holds_dispatch_and_takes_and_resume_sends(run_id, db, capsys, redis_client):
    from agentswarm.planning.planner import plan_tick
    from agentswarm.work.stage import work_on

    [early] = add_tasks(db, run_id, [["src/early.ts"]])  # sent before the pause
    code, out, _ = cli(capsys, "pause")
    assert code == 0 and "paused" in out
    code, out, _ = cli(capsys, "pause")
    assert "already paused" in out
    [late] = add_tasks(db, run_id, [["src/late.ts"]])
    with session_scope(db) as s:
        assert s.get(Task, late).enqueued_at is None  # not sent while paused
    assert work_on(early) == "paused"  # its message arrives after the pause: it waits, unsent
    with session_scope(db) as s:
        t = s.get(Task, early)
        assert (t.status, t.enqueued_at, t.attempts) == ("pending", None, 0)
    report = plan_tick(get_settings())
    assert report["runs"][run_id].get("skipped") == "paused"
    code, out, _ = cli(capsys, "status")
    assert "paused" in out.splitlines()[0]
    redis_client.flushdb()
    code, out, _ = cli(capsys, "resume")
    assert code == 0 and "2 waiting tasks sent" in out
    assert queued_task_ids(redis_client, "work", RUN_TASK) == {early, late}
    with session_scope(db) as s:
        kinds = s.scalars(select(Event.kind).where(Event.run_id == run_id, Event.kind.in_(["run.paused", "run.resumed"]))
                          .order_by(Event.id)).all()
        assert kinds == ["run.paused", "run.resumed"] and s.get(Run, run_id).paused_at is None


def test_pause_of_no_active_run_is_one_line(db, capsys, hub, monkeypatch):
    monkeypatch.setenv("HUB_PATH", str(hub))
    get_settings.cache_clear()
    code, _, err = cli(capsys, "pause")
    assert code == 2 and _line(err) == "agentswarm: no run yet: start one first"
    get_settings.cache_clear()


def test_cancel_task_by_prefix(run_id, db, capsys):
    [tid] = add_tasks(db, run_id, [["src/a.ts"]])
    code, out, _ = cli(capsys, "cancel-task", tid[:7])
    assert code == 0 and out.strip() == f"task {tid} cancelled"


def test_logs_prints_a_handoff_transcript_raw_or_readable(run_id, db, capsys):
    [tid] = add_tasks(db, run_id, [["src/a.ts"]])
    _seed_history(db, tid)
    code, out, _ = cli(capsys, "logs", tid[:6])
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4, out
    assert "checkout" in lines[0] and "assistant" in lines[1] and "write_file(" in lines[1]
    assert "tool" in lines[2] and "wrote src/a.ts" in lines[2] and "outcome" in lines[3]
    code, out, _ = cli(capsys, "logs", tid, "--raw", "--attempt", "1")
    assert [json.loads(ln)["kind"] for ln in out.splitlines()] == ["note", "assistant", "tool", "outcome"]


def test_logs_follow_prints_live_steps_then_the_rest_of_the_handoff(run_id, db, capsys):
    [tid] = add_tasks(db, run_id, [["src/a.ts"]])
    _set(db, tid, status="running", attempts=1)
    steps = [json.dumps({"t": float(i), "kind": "tool", "name": "run", "result": f"step {i}"}) for i in range(5)]
    with session_scope(db) as s:
        s.add(LiveStep(task_id=tid, attempt=1, offset=1, lines="\n".join(steps[:2]) + "\n", events=2))

    def agent_goes_on():
        time.sleep(0.6)
        with session_scope(db) as s:
            s.add(LiveStep(task_id=tid, attempt=1, offset=2, lines=steps[2] + "\n", events=1))
        time.sleep(0.6)
        with session_scope(db) as s:  # the handoff lands (and the live pieces go) with the task's end
            s.add(HandoffRecord(task_id=tid, attempt=1, status="complete", transcript="\n".join(steps) + "\n"))
            s.execute(LiveStep.__table__.delete().where(LiveStep.task_id == tid))
            s.execute(update(Task).where(Task.id == tid).values(status="complete"))

    writer = threading.Thread(target=agent_goes_on)
    writer.start()
    code, out, _ = cli(capsys, "logs", tid, "--follow", "--interval", "0.2")
    writer.join()
    assert code == 0
    assert [ln.split("step ")[-1] for ln in out.splitlines()] == ["0", "1", "2", "3", "4"], out
