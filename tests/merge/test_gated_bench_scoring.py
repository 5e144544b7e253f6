"""bench/gated_swarm.py scores the gate against the truth in the commits, not against what the swarm believes,
and runs one mode per GATE_PARALLEL value it is given (no swarm is started here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from agentswarm.db import Event, Feature, HandoffRecord, MergeAttempt, Run, Task, session_scope
from bench.gated_score import Git, finish_line, score_run, speculation_wasted, spread
from bench.gated_swarm import gate_env, parse_args
from tests.git.hubkit import branch, new_hub


def test_recall_culprits_and_misses_come_from_the_trailers(tmp_path, db):
    hub, root = new_hub(tmp_path / "hub.git", {"README.md": "seed\n"})
    now = datetime.now(UTC)

    def head(name: str, trailer: str | None) -> str:
        message = f"feature: {name}\n\nTask: {name}" + (f"\n\n{trailer}" if trailer else "")
        return branch(hub, f"swarm/{name}", root, {f"{name}.txt": name}, message=message)[-1]

    cases = {  # name: (trailer on its head, what happened to it)
        "clean": (None, "merged"),
        "fixed": ("Sim-Fixed: type", "merged"),  # presubmit made it fix the break within the attempt
        "typed": ("Sim-Fault: type", "rejected"),  # a true culprit
        "innocent": (None, "rejected"),  # a false culprit
        "sem1": ("Sim-Fault: semantic\nSim-Pair: p1", "merged"),  # the first half of a pair breaks nothing
        "sem2": ("Sim-Fault: semantic\nSim-Pair: p1", "merged"),  # the second one of that pair landing is a miss
        "sem3": ("Sim-Fault: semantic\nSim-Pair: p2", "merged"),  # alone in its pair: breaks nothing
        "tested": ("Sim-Fault: test", "merged"),  # a miss
    }
    with session_scope(db) as s:
        run = Run(max_tasks=10, max_tokens=10, max_dollars=1.0)
        s.add(run)
        s.flush()
        for i, (name, (trailer, fate)) in enumerate(cases.items()):
            sha = head(name, trailer)
            t = Task(id=name, run_id=run.id, description=name, branch=f"swarm/{name}", status="complete")
            s.add(t)
            s.flush()
            presubmit = [{"ok": False, "unavailable": False}, {"ok": True}] if name == "fixed" else []
            s.add(HandoffRecord(task_id=name, attempt=1, status="complete", head_sha=sha, commits=[sha],
                                presubmit=presubmit, created_at=now + timedelta(seconds=i)))
            s.add(MergeAttempt(task_id=name, branch=t.branch, strategy="fast-forward", status=fate, head_sha=sha,
                               main_after="m" * 40 if fate == "merged" else None,
                               finished_at=now + timedelta(seconds=10 + i), batch_id="b1"))
        s.add(Event(run_id=run.id, kind="gate.batch", data={"red": True, "runs": 4}))
        s.add(Event(run_id=run.id, kind="gate.run", data={"seconds": 2.5}))
    score = score_run(db, Git(hub), 60.0)
    assert score["landed"] == 6 and score["culprits"] == {"true": 1, "false": 1, "flaky_test": 0}
    assert score["caught_by_presubmit"]["type"] == 1 and score["caught_by_queue"]["type"] == 1
    assert score["missed"] == {"type": 0, "test": 1, "semantic": 1}
    assert score["recall"] == 0.5  # 2 caught (fixed, typed), 2 missed (tested, sem2)
    assert score["false_culprit_share"] == 0.5 and score["red_batches"] == 1 and score["bisection_runs"] == 3
    assert score["faults_injected"]["semantic"] == 3 and score["handoff_to_landed_p50_s"] == 10.0
    assert score["landed_per_hour"] == 360  # overall: 6 landings over the 60 s window


def test_without_the_flag_the_modes_are_as_before():
    args = parse_args([])
    assert args.plan == [("gate-on", None), ("gate-off", None)]
    assert args.gate_delay is None and args.flat == 0 and args.latency == 0.0 and not args.until_done


def test_gate_parallel_runs_one_gated_mode_per_value():
    assert parse_args(["--gate-parallel", "1,8"]).plan == [("gate-on", 1), ("gate-on", 8)]
    # combined with --modes: a mode without a gate runs once, whatever the values
    args = parse_args(["--gate-parallel", "8, 1", "--modes", "gate-off,presubmit-off"])
    assert args.plan == [("gate-off", None), ("presubmit-off", 8), ("presubmit-off", 1)]
    args = parse_args(["--flat", "100", "--workers", "100", "--gate-delay", "60", "--latency", "2",
                       "--gate-parallel", "1,8", "--seconds", "90", "--faults", "type:0.1"])
    assert (args.flat, args.workers, args.gate_delay, args.latency, args.seconds) == (100, 100, 60.0, 2.0, 90.0)
    assert args.faults == "type:0.1"


@pytest.mark.parametrize("argv", [["--gate-parallel", "0"], ["--gate-parallel", "1,x"], ["--gate-parallel", "2,2"],
                                  ["--gate-parallel", ""], ["--gate-delay", "-1"], ["--gate-delay", "inf"],
                                  ["--gate-delay", "soon"], ["--flat", "-3"], ["--latency", "-1"],
                                  ["--modes", "gate-on,fast"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "error:" in capsys.readouterr().err


def test_gate_env_sets_only_what_was_asked():
    assert gate_env(None, None) == {}  # the swarm's defaults
    assert gate_env(1, None) == {"GATE_PARALLEL": "1", "GATE_WORKERS": "2"}  # lanes, and a bisection aside
    assert gate_env(8, 300.0) == {"GATE_PARALLEL": "8", "GATE_WORKERS": "16", "GATE_DELAY_S": "300.0"}
    assert float(gate_env(None, 0.25)["GATE_DELAY_S"]) == 0.25


def test_speculation_wasted_counts_the_runs_cancelled_in_this_run(db):
    with psycopg.connect(db.replace("+psycopg", "")) as conn:
        # a temporary table goes first on the search path: the swarm's own gate_runs, if any, is not touched
        conn.execute("create temporary table gate_runs (run_id text, state text, stage text, seconds float, "
                     "outcome text)")
        # Cancelled while waiting or running, or done but behind a red batch all the same: wasted.
        rows = [("r1", "cancelled", "lane 1", None, "cancelled"), ("r1", "cancelled", "lane 2", None, "orphaned"),
                ("r1", "done", "lane 3", 4.0, "cancelled"), ("r1", "done", "batch", 4.0, "landed"),
                ("r1", "running", "bisect", None, None), ("r2", "cancelled", "batch", None, "cancelled")]
        with conn.cursor() as cur:
            cur.executemany("insert into gate_runs values (%s, %s, %s, %s, %s)", rows)
        assert speculation_wasted(conn, "r1") == 2
        assert speculation_wasted(conn, "r3") == 0


def test_speculation_wasted_is_null_without_a_gate_runs_table(db):
    with psycopg.connect(db.replace("+psycopg", "")) as conn:
        conn.execute("create schema if not exists gatebench_empty")
        conn.execute("set search_path to gatebench_empty")
        assert speculation_wasted(conn, "r1") is None
        conn.execute("create temporary table gate_runs (run_id text, kind text)")  # another shape: null, not a crash
        assert speculation_wasted(conn, "r1") is None
        assert conn.execute("select 1").fetchone() == (1,)  # the connection is still usable


def test_time_to_done_only_once_every_feature_landed(db):
    start = datetime.now(UTC)
    with session_scope(db) as s:
        run = Run(max_tasks=10, max_tokens=10, max_dollars=1.0)
        s.add(run)
        s.flush()
        for fid, deps in (("a", []), ("b", ["a"]), ("c", [])):
            s.add(Feature(id=fid, category="flat", title=fid, dependencies=deps))
        for fid, at in (("a", 10), ("b", 30)):
            s.add(Task(id=f"t-{fid}", run_id=run.id, description=fid, branch=f"swarm/{fid}", status="complete",
                       feature_ids=[fid]))
            s.flush()
            s.add(MergeAttempt(task_id=f"t-{fid}", branch=f"swarm/{fid}", strategy="fast-forward", status="merged",
                               finished_at=start + timedelta(seconds=at)))
    line = finish_line(db, start)
    assert line["all_done"] is False and line["time_to_done_s"] is None
    assert (line["links"], line["features_landed"], line["features"]) == (2, 2, 3)
    assert line["median_link_s"] == 15.0  # a: 10 s from the start; b: 20 s from a's landing
    with session_scope(db) as s:
        s.add(Task(id="t-c", run_id=run.id, description="c", branch="swarm/c", status="complete", feature_ids=["c"]))
        s.flush()
        s.add(MergeAttempt(task_id="t-c", branch="swarm/c", strategy="fast-forward", status="merged",
                           finished_at=start + timedelta(seconds=45)))
    line = finish_line(db, start)
    assert line["all_done"] is True and line["time_to_done_s"] == 45.0


def test_the_recheck_sample_spreads_over_main():
    shas = [f"s{i}" for i in range(10)]
    assert spread(shas, None) == shas and spread(shas, 0) == shas and spread(shas, 12) == shas
    assert spread(shas, 1) == ["s9"]  # the newest main: every landing in it
    assert spread(shas, 3) == ["s0", "s4", "s9"]
