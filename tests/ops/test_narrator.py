"""`make swarm`'s story, read from a real run in Postgres: a line per turn of events, a progress line at
most every 10 s, and the box at the end."""

from __future__ import annotations

from datetime import UTC, datetime

from agentswarm.db import MergeAttempt, session_scope
from agentswarm.db.events import record_event
from agentswarm.db.models import MainCheck, MergeStatus
from agentswarm.lifecycle.runs import end_run
from agentswarm.ops.console import Console
from agentswarm.ops.narrator import Narrator
from tests.support.tasks import add_tasks


def _land(db, run_id: str, n: int) -> None:
    ids = add_tasks(db, run_id, [[f"src/f{i}.ts"] for i in range(n)])
    with session_scope(db) as s:
        for task_id in ids:
            s.add(MergeAttempt(task_id=task_id, branch=f"swarm/{task_id}", strategy="rebase",
                               status=MergeStatus.merged, finished_at=datetime.now(UTC)))
            record_event(s, "merge.merged", f"{task_id} landed", run_id=run_id, task_id=task_id)
        record_event(s, "gate.batch", f"batch b1: {n} landed", run_id=run_id, landed=n, red=False)


def test_the_story_of_a_run(active_run, db):
    run_id = active_run
    story = Narrator(run_id, "http://127.0.0.1:8080/", lambda: session_scope(db))
    story.last_progress = 0.0
    assert [line for line in story.lines(now=1.0) if not line.startswith("run started")] == []  # nothing yet
    _land(db, run_id, 3)
    with session_scope(db) as s:
        record_event(s, "gate.culprit", "swarm/t9: vitest failed (src/ui/toast.test.ts)", run_id=run_id)
        now = datetime.now(UTC)
        s.add(MainCheck(run_id=run_id, sha="a" * 40, result="red", started_at=now, finished_at=now))
        record_event(s, "reconcile.red", f"main {'a' * 10} is broken: npx vitest run", run_id=run_id)
        record_event(s, "reconcile.red", f"main {'a' * 10} is still broken", run_id=run_id)  # no news: no line
        for _ in range(50):
            record_event(s, "planner.planned", "a plan tick", run_id=run_id)  # ticks are not the story
    lines = story.lines(now=20.0)
    assert lines[0] == "sent back: swarm/t9: vitest failed (src/ui/toast.test.ts)", lines
    assert lines[1].startswith("main is red: main aaaaaaaaaa is broken"), lines
    assert len(lines) == 3 and lines[2].startswith("progress: 0/") and "3 landed (+3 in 1 batch)" in lines[2], lines
    assert "main red at aaaaaaaaaa" in lines[2]
    _land(db, run_id, 2)
    assert story.lines(now=23.0) == []  # within 10 s of the last progress line: said later
    with session_scope(db) as s:
        end_run(s, run_id, "finished", "every feature is done")
    end = story.lines(now=40.0)
    assert end[0] == "run ended: every feature is done", end
    assert "5 landed (+2 in 1 batch)" in end[1]
    text = "\n".join(end[2:])
    assert end[2].startswith("╭") and end[-1].startswith("╰") and len({len(line) for line in end[2:]}) == 1
    for words in ("every feature is done", "landings   5", "main       red at aaaaaaaaaa", "cost       $0.0000",
                  "dashboard  http://127.0.0.1:8080/", "Ctrl-C stops every process"):
        assert words in text, text
    assert story.lines(now=100.0) == []  # the box once


def test_the_console_keeps_only_warnings_of_quiet_files(tmp_path):
    import io

    log = tmp_path / "work.log"
    log.write_text("\n".join([
        " -------------- celery@host v5.5 (immunity)",
        "[2026-12-07 22:00:00,001: INFO/MainProcess] plan_tick: nothing to plan",
        "[2026-12-07 22:00:01,001: WARNING/MainProcess] gate sandbox failed on abc",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "[2026-12-07 22:00:02,001: INFO/MainProcess] Task agentswarm.run_task succeeded",
    ]) + "\n")
    out = io.StringIO()
    console = Console({"work": log}, out, quiet=frozenset({"work"}))
    console.pump(final=True)
    console.close()
    shown = [line.split("| ", 1)[1] for line in out.getvalue().splitlines()]
    assert shown == ["[2026-12-07 22:00:01,001: WARNING/MainProcess] gate sandbox failed on abc",
                     "Traceback (most recent call last):", '  File "x.py", line 1, in <module>']


def test_a_failed_task_whose_features_landed_is_superseded_not_failed(active_run, db):
    """A conflict task that failed after another resolution landed its branch is not a failure of the run."""
    from sqlalchemy import select, update

    from agentswarm.control.status import run_summary
    from agentswarm.db.models import Feature, FeatureStatus, Run, Task, TaskStatus

    done_one, other = "world-001", "ui-002"
    ids = add_tasks(db, active_run, [["src/a.ts"], ["src/b.ts"], ["src/c.ts"]])
    with session_scope(db) as s:
        s.execute(update(Task).where(Task.id == ids[0]).values(status=TaskStatus.failed, feature_ids=[done_one]))
        s.execute(update(Task).where(Task.id == ids[1]).values(status=TaskStatus.failed, feature_ids=[other]))
        s.execute(update(Task).where(Task.id == ids[2]).values(status=TaskStatus.failed, feature_ids=[]))
        s.execute(update(Feature).where(Feature.id == done_one).values(status=FeatureStatus.done))
    with session_scope(db) as s:
        tasks = run_summary(s, s.get(Run, active_run))["tasks"]
        assert s.scalar(select(Feature.status).where(Feature.id == other)) != FeatureStatus.done
    assert tasks == {"superseded": 1, "failed": 2}, tasks
