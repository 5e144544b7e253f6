"""The gate as `agentswarm status` and the dashboard see it: gate_state over rows put in the database directly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from agentswarm.config import get_settings, load_settings
from agentswarm.control.status import gate_state, gate_why, merge_feed
from agentswarm.db.models import Event, GateRunRow, HandoffRecord, MergeAttempt, Run, Task
from agentswarm.db.session import session_scope
from agentswarm.ops.cli import cli

NOW = datetime.now(UTC)  # the year the seeded events carry; their ages are taken from the clock at seeding
RUN, OTHER = "rungate01", "runother1"
MAIN_1, MAIN_2 = "1a2b3c4d5e" + "0" * 30, "9f8e7d6c5b" + "0" * 30


def _at(seconds_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds_ago)


def _run(run_id: str, status: str = "active", started: float = 3600) -> Run:
    return Run(id=run_id, status=status, max_tasks=100, max_tokens=1_000_000, max_dollars=10.0,
               started_at=_at(started))


def _check(ok: bool, unavailable: bool = False) -> dict:
    code = 0 if ok else 127 if unavailable else 1
    return {"tree": "t" * 40, "full": False, "ok": ok, "unavailable": unavailable, "seconds": 1.0, "output": "",
            "commands": [{"command": "npx tsc --noEmit", "exit_code": code, "duration_s": 1.0, "timed_out": False}]}


def _task(s, run_id: str, n: int, status: str = "complete") -> Task:
    t = Task(id=f"{run_id[:4]}t{n:03d}", run_id=run_id, kind="feature", status=status, title=f"task {n}",
             description="", scope=["src/"], acceptance=[], priority=3, branch=f"swarm/{run_id[:4]}t{n:03d}")
    s.add(t)
    return t


def _merge(s, t: Task, status: str, at: datetime, batch: str | None = None, position: int | None = None,
           main_after: str | None = None, gate: dict | None = None) -> None:
    s.add(MergeAttempt(task_id=t.id, branch=t.branch, strategy="rebase", status=status, main_before="0" * 40,
                       main_after=main_after, batch_id=batch, position=position, tree_sha="e" * 40 if batch else None,
                       gate=gate or {}, queued_at=at, started_at=at, finished_at=at, duration_ms=5.0))


def _event(s, kind: str, at: datetime, run_id: str = RUN, task_id: str | None = None, **data) -> None:
    s.add(Event(run_id=run_id, task_id=task_id, kind=kind, message=kind, data=data, created_at=at))


def _red(tests: list[str] | None = None, output: str = "", clash: dict | None = None) -> dict:
    return {"result": "red", "output": output, "commands": [], "tested_with": [], "clashes_with": clash,
            "tests": tests or [], "batch_size": 3}


def _batch(s, batch: str, at: float, landed: int, main: str, red: bool, runs: int, run_id: str = RUN) -> None:
    """A decided batch: its gate.testing and gate.run events (10 s each) and its gate.batch event."""
    for i in range(runs):
        _event(s, "gate.testing", _at(at + 10 * (runs - i)), run_id, batch_id=batch, sha=main, size=3, stage="batch")
        _event(s, "gate.run", _at(at + 10 * (runs - i) - 10), run_id, batch_id=batch, stage="batch", size=3, sha=main,
               tree="e" * 40, full=False, files=2, result="red" if red and i == 0 else "green", seconds=10.0,
               commands=[])
    _event(s, "gate.batch", _at(at), run_id, batch_id=batch, size=3, landed=landed, culprits=[], flaky=[],
           runs=runs, red=red, seconds=10.0 * runs, main=main, held=None)


@pytest.fixture
def seeded(db):
    """A run with two decided batches (one red), three culprits, a flaky call, presubmit catches, and another run."""
    with session_scope(db) as s:
        s.add_all([_run(RUN), _run(OTHER, "finished", 7200)])
        s.flush()
        ts = [_task(s, RUN, n) for n in range(8)]
        other = [_task(s, OTHER, n) for n in range(2)]
        s.flush()
        _merge(s, ts[0], "merged", _at(900), "batch01", 0, MAIN_1, {"result": "green", "runs": 1, "full": False})
        _merge(s, ts[1], "merged", _at(600), "batch02", 0, "c" * 40, {"result": "green", "runs": 3, "full": False})
        _merge(s, ts[2], "merged", _at(600), "batch02", 1, MAIN_2,
               {"result": "green", "runs": 3, "full": False, "flaky": True, "flaky_tests": ["a.test.ts > x"]})
        _merge(s, ts[3], "merged", _at(100), None, None, "d" * 40)  # landed without the gate (GATE=off earlier)
        _merge(s, ts[4], "rejected", _at(590), "batch02", 2, None,
               _red(output="$ npx vitest related --run src/a.ts\n\n FAIL src/a.test.ts\nAssertionError: 1 != 2",
                    clash={"task_id": ts[1].id, "branch": ts[1].branch, "title": "task 1"}))
        _merge(s, ts[5], "rejected", _at(580), "batch02", 3, None,
               _red(tests=["src/b.test.ts > b > adds", "src/b.test.ts > b > subs"], output="$ npx vitest\nFAIL"))
        _merge(s, ts[6], "rejected", _at(570), "batch02", 4, None,
               _red(output="$ npx tsc --noEmit\n\nsrc/c.ts(1,1): error TS2304: Cannot find name 'x'.\nmore"))
        _merge(s, ts[7], "conflict", _at(50))
        _merge(s, other[0], "rejected", _at(30), "batchX", 0, None, _red(tests=["other run"]))
        _batch(s, "batch01", 900, 1, MAIN_1, red=False, runs=1)
        _batch(s, "batch02", 570, 2, MAIN_2, red=True, runs=5)
        _batch(s, "batchX", 20, 1, "f" * 40, red=True, runs=2, run_id=OTHER)  # another run: never counted
        _event(s, "gate.flaky", _at(600), task_id=ts[2].id, batch_id="batch02", tests=["a.test.ts > x"], tree="e" * 40)
        _event(s, "gate.culprit", _at(590), task_id=ts[4].id, batch_id="batch02", clashes_with=None, tests=[],
               tree="e" * 40)
        _event(s, "gate.flaky", _at(20), OTHER, task_id=other[1].id, batch_id="batchX", tests=[], tree="e" * 40)
        runs = {0: [_check(False), _check(True)], 1: [_check(True)], 2: [_check(False, unavailable=True)],
                3: [_check(False), _check(False)], 4: []}
        for n, checks in runs.items():
            s.add(HandoffRecord(task_id=ts[n].id, attempt=1, status="complete", presubmit=checks))
        s.add(HandoffRecord(task_id=other[0].id, attempt=1, status="complete", presubmit=[_check(False)]))
    return db


def _state(db, run_id: str = RUN, gate: str = "batch") -> dict:
    with session_scope(db) as s:
        run = s.get(Run, run_id)
        assert run is not None
        return gate_state(s, run, load_settings(database_url=db, gate=gate, gate_presubmit=False))


def test_gate_state_counts_and_culprits(seeded):
    g = _state(seeded)
    assert g["mode"] == "batch" and g["presubmit"] is False and g["in_test"] is None
    assert g["last_green"] == MAIN_2
    assert (g["batches"], g["red_batches"], g["runs"], g["run_seconds"]) == (2, 1, 6, 60.0)
    assert (g["landed"], g["culprits"], g["flaky"], g["presubmit_caught"]) == (3, 3, 1, 2)
    culprits = g["recent_culprits"]
    assert [c["task"] for c in culprits] == ["rungt006", "rungt005", "rungt004"]  # newest first
    assert culprits[0]["why"] == "src/c.ts(1,1): error TS2304: Cannot find name 'x'."
    assert culprits[1]["why"] == "test: src/b.test.ts > b > adds" and culprits[1]["clashes_with"] is None
    assert culprits[2]["clashes_with"] == "rungt001" and culprits[2]["why"].startswith("clashes with task rungt001")
    assert culprits[0]["branch"] == "swarm/rungt006" and culprits[0]["title"] == "task 6"
    assert culprits[0]["batch"] == "batch02" and culprits[0]["at"].startswith(str(NOW.year))
    other = _state(seeded, OTHER)
    assert (other["batches"], other["runs"], other["culprits"], other["flaky"], other["presubmit_caught"]) \
        == (1, 2, 1, 1, 1)
    assert other["last_green"] == "f" * 40 and other["landed"] == 0


def test_a_run_without_the_gate(db):
    with session_scope(db) as s:
        s.add(_run(RUN))
    g = _state(db, gate="off")
    assert g == {"mode": "off", "presubmit": False, "in_test": None, "last_green": None, "batches": 0,
                 "red_batches": 0, "runs": 0, "run_seconds": 0.0, "landed": 0, "culprits": 0, "flaky": 0,
                 "presubmit_caught": 0, "recent_culprits": [], "parallel": 4, "runner": "inline", "in_flight": [],
                 "speculation_wasted": 0, "capacity_per_hour": None}


def test_the_batch_in_test_until_it_is_decided(seeded):
    with session_scope(seeded) as s:
        _event(s, "gate.testing", _at(30), batch_id="batch03", sha="a" * 40, size=4, stage="batch")
        _event(s, "gate.run", _at(20), batch_id="batch03", stage="batch", size=4, sha="a" * 40, result="red",
               seconds=10.0)
        _event(s, "gate.testing", _at(6), batch_id="batch03", sha="b" * 40, size=2, stage="bisect 2/4")
        _event(s, "gate.testing", _at(1), OTHER, batch_id="batchY", sha="c" * 40, size=1, stage="batch")
    t = _state(seeded)["in_test"]
    assert t is not None and (t["batch_id"], t["size"], t["stage"], t["sha"], t["batch_size"]) \
        == ("batch03", 2, "bisect 2/4", "b" * 40, 4)
    assert 5 <= t["seconds"] < 60 and 29 <= t["batch_seconds"] < 90 and t["batch_seconds"] > t["seconds"]
    with session_scope(seeded) as s:
        _event(s, "gate.batch", _at(0), batch_id="batch03", size=4, landed=0, culprits=[], flaky=[], runs=2,
               red=True, seconds=20.0, main=MAIN_2, held=None)
    g = _state(seeded)
    assert g["in_test"] is None and g["batches"] == 3 and g["red_batches"] == 2 and g["runs"] == 7
    assert g["last_green"] == MAIN_2  # the newest batch landed nothing: main is where the last landing put it


def test_last_green_falls_back_to_the_newest_gated_merge(db):
    with session_scope(db) as s:
        s.add(_run(RUN))
        s.flush()
        ts = [_task(s, RUN, n) for n in range(3)]
        s.flush()
        _merge(s, ts[0], "merged", _at(300), "b1", 0, MAIN_1)
        _merge(s, ts[1], "merged", _at(200), "b2", 0, MAIN_2)
        _merge(s, ts[2], "merged", _at(100), None, None, "d" * 40)  # not through the gate
        _event(s, "gate.batch", _at(50), batch_id="b3", size=1, landed=0, culprits=[], flaky=[], runs=1, red=True,
               seconds=1.0, main="d" * 40, held=None)
    g = _state(db)
    assert g["last_green"] == MAIN_2 and g["landed"] == 2


def test_why_a_branch_was_rejected():
    clash = {"task_id": "t9", "branch": "swarm/t9", "title": "x"}
    assert gate_why({"clashes_with": clash, "tests": ["a > b"]}) == "clashes with task t9 (swarm/t9)"
    assert gate_why({"clashes_with": None, "tests": ["a > b", "c"], "output": "x"}) == "test: a > b"
    assert gate_why({"output": "$ npx tsc\n\n  src/a.ts: error TS1\nnext"}) == "src/a.ts: error TS1"
    assert gate_why({"output": "$ npx tsc"}) == "$ npx tsc"
    assert gate_why({}) == gate_why(None) == "the gate's checks failed"
    assert len(gate_why({"tests": ["x" * 1000]})) <= 161


def test_merge_feed_rows_carry_the_batch(seeded):
    with session_scope(seeded) as s:
        rows = {m["task"]: m for m in merge_feed(s, RUN, 50)}
    rejected = rows["rungt005"]
    assert rejected["status"] == "rejected" and rejected["why"] == "test: src/b.test.ts > b > adds"
    assert (rejected["batch"], rejected["position"], rejected["tree"]) == ("batch02", 3, "e" * 40)
    flaky = rows["rungt002"]
    assert flaky["why"] is None and flaky["flaky"] is True and flaky["batch"] == "batch02" and flaky["position"] == 1
    plain = rows["rungt003"]
    assert plain["batch"] is None and plain["position"] is None and plain["tree"] is None and not plain["flaky"]


@pytest.fixture
def gate_env(monkeypatch):
    """`agentswarm status` reads the process settings: set GATE for it, and drop the cached settings after."""
    def set_gate(mode: str) -> None:
        monkeypatch.setenv("GATE", mode)
        monkeypatch.setenv("GATE_PRESUBMIT", "true")
        get_settings.cache_clear()

    yield set_gate
    get_settings.cache_clear()


def test_status_shows_the_gate(seeded, gate_env):
    gate_env("batch")
    with session_scope(seeded) as s:
        _event(s, "gate.testing", _at(6), batch_id="3f2a9c0d1e2b", sha="b" * 40, size=4, stage="batch")
    out = CliRunner().invoke(cli, ["status"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    gate = next(ln for ln in lines if ln.startswith("gate:"))
    assert "gate:   batch, presubmit on — testing batch 3f2a9c… (4 branches, batch) for " in gate
    assert "· main last green 9f8e7d6c5b · 2 batches (1 red), 6 gate runs in 60s · " in gate
    assert gate.endswith("3 culprits, 1 flaky, 2 caught by presubmit")
    culprits = [ln for ln in lines if ln.startswith("  culprit ")]
    assert len(culprits) == 3 and "rungt006 swarm/rungt006: src/c.ts(1,1): error TS2304" in culprits[0]
    assert "clashes with task rungt001 (swarm/rungt001)" in culprits[2] and culprits[2].endswith("(task 4)")
    body = json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)
    assert body["run"] == RUN and body["merges"]["rejected"] == 3
    g = body["gate"]
    assert g["mode"] == "batch" and g["presubmit"] is True and g["in_test"]["batch_id"] == "3f2a9c0d1e2b"
    assert g["last_green"] == MAIN_2 and g["culprits"] == 3 and len(g["recent_culprits"]) == 3


def test_status_with_the_gate_off(seeded, gate_env):
    gate_env("off")
    out = CliRunner().invoke(cli, ["status"])
    assert out.exit_code == 0, out.output
    assert "gate:   off (main moves to whatever merges cleanly)" in out.output.splitlines()
    assert "  culprit " not in out.output
    assert json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)["gate"]["mode"] == "off"


def _gate_run(run_id: str, lane: int | None, state: str, *, age: float, seconds: float | None = None,
              outcome: str | None = None, entries: int = 0, worker: str | None = None, attempts: int = 0,
              stage: str = "batch") -> GateRunRow:
    return GateRunRow(run_id=run_id, lane=lane, stage=stage, state=state, sha=f"{lane or 0}c" * 20, base="ba" * 20,
                      tree="t" * 40, batch_id="batch" + str(lane), options={"branches": entries or 1},
                      spec={"entries": [{"task_id": f"t{i}"} for i in range(entries)]}, worker=worker,
                      attempts=attempts, seconds=seconds, outcome=outcome, created_at=_at(age))


def test_status_shows_the_runs_in_flight_the_speculation_wasted_and_the_capacity(seeded, gate_env, monkeypatch):
    monkeypatch.setenv("GATE_PARALLEL", "4")
    gate_env("batch")
    with session_scope(seeded) as s:
        # Done: three landed lanes of 8 branches in 300, 310 and 320 s; one cancelled behind a red one.
        for i, secs in enumerate((300.0, 310.0, 320.0)):
            s.add(_gate_run(RUN, i, "done", age=900, seconds=secs, outcome="landed", entries=8))
        s.add(_gate_run(RUN, 3, "cancelled", age=600, outcome="cancelled", entries=8))
        s.add(_gate_run(RUN, 0, "running", age=42, entries=6, worker="gatebox/71/ab12cd", attempts=2))
        s.add(_gate_run(RUN, 1, "queued", age=12, entries=5))
        s.add(_gate_run(OTHER, 0, "running", age=5, entries=3, worker="elsewhere/1/x"))  # another run's
    g = _state(seeded)
    assert [(r["lane"], r["state"], r["branches"], r["worker"]) for r in g["in_flight"]] == [
        (0, "running", 6, "gatebox/71/ab12cd"), (1, "queued", 5, None)]
    assert g["in_flight"][0]["age_s"] >= 42 and g["speculation_wasted"] == 1
    # 4 lanes x 8 branches a batch x 3600 s / 310 s (the median run) = 372 landings an hour.
    assert g["capacity_per_hour"] == 372 and g["parallel"] == 4
    out = CliRunner().invoke(cli, ["status"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    summary = next(ln for ln in lines if ln.startswith("  in flight "))
    assert summary.startswith("  in flight 2 run(s), up to 4 lanes (inline) · speculation wasted 1 run(s) · ")
    assert summary.endswith("capacity ~372 landings/h at today's run time and batch size")
    lane0 = next(ln for ln in lines if ln.startswith("  lane 0 "))
    assert "running" in lane0 and "6 branch(es)" in lane0 and "gatebox/71/ab12cd" in lane0 and "attempt 2" in lane0
    assert any(ln.startswith("  lane 1 ") and "no worker yet" in ln for ln in lines)
