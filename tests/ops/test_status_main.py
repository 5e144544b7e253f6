"""Main's health as `agentswarm status` and the dashboard see it: main_state over rows put in the database directly."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from agentswarm.config import get_settings, load_settings
from agentswarm.control.status import main_state
from agentswarm.db.models import FlakyStatus, FlakyTest, MainCheck, MergeAttempt, Run, Task
from agentswarm.db.session import session_scope
from agentswarm.ops.cli import cli
from agentswarm.ops.cli.watch import _main_lines
from agentswarm.reconcile.page import screenshots_root
from tests.dashboard.sample import write_screenshots

RUN, OTHER = "runmain01", "runother1"
SHA = {k: (k * 40)[:40] for k in "abcdef"}  # main shas, oldest first
CULPRIT = "c0ffee" + "0" * 34
FLAKY_1, FLAKY_2 = "src/x.test.ts > x > y", "src/z.test.ts > z > w"
TSC_FAILED = [{"command": "npx tsc --noEmit", "exit_code": 2, "s": 4.0, "timed_out": False, "tests": [],
               "kind": "command"}, {"command": "npx vitest run", "exit_code": 0, "s": 9.0, "timed_out": False,
                                    "tests": [], "kind": "command"}]
TEST_FAILED = [{"command": "npx tsc --noEmit", "exit_code": 0, "s": 4.0, "timed_out": False, "tests": [],
                "kind": "command"}, {"command": "npx vitest run", "exit_code": 1, "s": 9.0, "timed_out": False,
                                     "tests": ["src/a.test.ts > a > adds"], "kind": "command"}]


def _at(seconds_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds_ago)


def _task(s, n: int, kind: str = "feature", status: str = "complete", run_id: str = RUN) -> Task:
    t = Task(id=f"{run_id[:4]}t{n:03d}", run_id=run_id, kind=kind, status=status, title=f"task {n}", description="",
             scope=["src/"], acceptance=[], priority=3, branch=f"swarm/{run_id[:4]}t{n:03d}")
    s.add(t)
    return t


def _check(s, sha: str, result: str, ago: float, run_id: str = RUN, **kw) -> None:
    s.add(MainCheck(run_id=run_id, sha=sha, result=result, started_at=_at(ago + 30), finished_at=_at(ago),
                    seconds=30.0, checks=kw.pop("checks", []), **kw))


@pytest.fixture
def seeded(db):
    """Six checks of main (two red spells of 200 s and 300 s, main green now), two reverts (one landed,
    one failed), two quarantined tests, one observed, one released; and another run's red check."""
    with session_scope(db) as s:
        s.add_all([Run(id=RUN, status="active", max_tasks=100, max_tokens=1_000_000, max_dollars=10.0,
                       started_at=_at(7200)),
                   Run(id=OTHER, status="finished", max_tasks=100, max_tokens=1_000_000, max_dollars=10.0,
                       started_at=_at(9000))])
        s.flush()
        culprit, fixer = _task(s, 1), _task(s, 2)
        revert, failed_revert = _task(s, 3, "revert"), _task(s, 4, "revert", "failed")
        s.flush()
        s.add(MergeAttempt(task_id=revert.id, branch=revert.branch, strategy="rebase", status="merged",
                           main_before=SHA["d"], main_after=SHA["e"], queued_at=_at(800), finished_at=_at(790)))
        _check(s, SHA["a"], "green", 3000, screenshot=f"{SHA['a']}.png")
        _check(s, SHA["b"], "red", 2000, checks=TEST_FAILED, failing_tests=["src/a.test.ts > a > adds"],
               action="fix", culprit_sha=CULPRIT, culprit_task_id=fixer.id,
               bisect={"reason": "the first bad commit is a merge"})
        _check(s, SHA["c"], "green", 1800, screenshot=f"{SHA['c']}.png")
        _check(s, SHA["d"], "red", 1000, checks=TSC_FAILED, action="revert", culprit_sha=CULPRIT,
               culprit_task_id=culprit.id, revert_task_id=revert.id)
        _check(s, SHA["e"], "green", 700, quarantined=[FLAKY_1])
        _check(s, SHA["f"], "green", 12, screenshot=f"{SHA['f']}.png")
        _check(s, "9" * 40, "red", 5, OTHER, checks=TSC_FAILED, culprit_sha=CULPRIT)  # another run: not counted
        s.add_all([
            FlakyTest(name=FLAKY_1, file="src/x.test.ts", status=FlakyStatus.quarantined, observations=2,
                      passes_in_row=1, last_source="reconciler", fix_task_id=fixer.id, quarantined_at=_at(900)),
            FlakyTest(name=FLAKY_2, file="src/z.test.ts", status=FlakyStatus.quarantined, observations=3,
                      passes_in_row=0, last_source="gate", quarantined_at=_at(600)),
            FlakyTest(name="src/o.test.ts > o", file="src/o.test.ts", status=FlakyStatus.observed, observations=1),
            FlakyTest(name="src/r.test.ts > r", file="src/r.test.ts", status=FlakyStatus.released, observations=0,
                      quarantined_at=_at(5000), released_at=_at(4000)),
        ])
    _ = failed_revert
    return db


def _state(db, tmp_path, run_id: str = RUN, **overrides) -> dict:
    settings = load_settings(database_url=db, hub_path=tmp_path / "hub.git", **overrides)
    with session_scope(db) as s:
        run = s.get(Run, run_id)
        assert run is not None
        return main_state(s, run, settings)


def test_main_state(seeded, tmp_path):
    write_screenshots(screenshots_root(tmp_path / "hub.git"), [f"{SHA[k]}.png" for k in "acf"])
    (screenshots_root(tmp_path / "hub.git") / "notes.png").write_bytes(b"not a screenshot of a sha")
    m = _state(seeded, tmp_path, reconcile_screenshots_keep=2)
    json.dumps(m)  # JSON-able as it is
    assert m["main"]["sha"] == SHA["f"] and m["main"]["result"] == "green" and 12 <= m["main"]["age_s"] < 60
    h = m["health"]
    assert (h["checks"], h["shas_checked"], m["shas_green"], h["green_share"]) == (6, 6, 4, 0.667)
    assert h["time_to_green_s"] == {"spells": 2, "p50": 250.0, "p95": 295.0, "max": 300.0}
    assert h["red_for_s"] is None
    assert h["reverts"] == {"made": 2, "landed": 1, "failed": 1}
    assert h["culprits_by_kind"] == {"type": 1, "test": 1}
    assert m["flaky"] == {"observed": 1, "quarantined": 2, "released": 1, "release_after": 3}
    assert [c["sha"] for c in m["checks"]] == [SHA[k] for k in "fedcb"]  # the newest five, newest first
    newest = m["checks"][0]
    assert newest["screenshot"] == f"{SHA['f']}.png" and newest["why"] is None and newest["seconds"] == 30.0
    assert m["checks"][1]["quarantined"] == [FLAKY_1] and m["checks"][1]["quarantined_count"] == 1
    red = m["last_red"]
    assert red == m["checks"][2] and red["sha"] == SHA["d"] and red["why"] == "npx tsc --noEmit"
    assert (red["action"], red["culprit_task"], red["culprit_sha"]) == ("revert", "runmt001", CULPRIT)
    assert (red["revert_task"], red["revert_status"], red["revert_landed"]) == ("runmt003", "complete", True)
    fix = m["checks"][4]
    assert fix["failing_tests"] == ["src/a.test.ts > a > adds"] and fix["failing_count"] == 1
    assert fix["action"] == "fix" and fix["revert_task"] is None and fix["bisect_reason"].startswith("the first bad")
    assert [q["name"] for q in m["quarantined"]] == [FLAKY_1, FLAKY_2]  # oldest quarantine first
    q = m["quarantined"][0]
    assert (q["file"], q["observations"], q["passes_in_row"], q["release_after"], q["fix_task"]) \
        == ("src/x.test.ts", 2, 1, 3, "runmt002")
    assert q["quarantined_at"].startswith(str(datetime.now(UTC).year))
    assert m["screenshots"] == [f"{SHA['f']}.png", f"{SHA['c']}.png"]  # newest first, RECONCILE_SCREENSHOTS_KEEP


def test_main_state_of_a_red_main_and_of_a_run_never_checked(seeded, tmp_path):
    with session_scope(seeded) as s:
        _check(s, SHA["a"], "red", 6, checks=TSC_FAILED)
        _check(s, SHA["a"], "cannot-run", 3, output="npm ci failed: exit 1\nmore")
    m = _state(seeded, tmp_path)
    assert m["main"]["result"] == "cannot-run" and m["checks"][0]["why"] == "npm ci failed: exit 1"
    assert 5 <= m["health"]["red_for_s"] < 60 and m["last_red"]["sha"] == SHA["a"]
    assert m["screenshots"] == []
    with session_scope(seeded) as s:
        s.add(Run(id="runempty1", status="active", max_tasks=1, max_tokens=1, max_dollars=1.0, started_at=_at(5)))
    empty = _state(seeded, tmp_path, "runempty1")
    assert empty["main"] is None and empty["checks"] == [] and empty["last_red"] is None
    assert empty["health"]["shas_checked"] == 0 and empty["shas_green"] == 0
    assert len(empty["quarantined"]) == 2  # flaky tests outlive runs
    assert _main_lines(empty)[0].startswith("main:   not checked yet (the reconciler checks every 5m00s;")


@pytest.fixture
def status_env(monkeypatch, tmp_path):
    """`agentswarm status` reads the process settings: point HUB_PATH at tmp_path, drop cached settings after."""
    monkeypatch.setenv("HUB_PATH", str(tmp_path / "hub.git"))
    get_settings.cache_clear()
    yield tmp_path / "hub.git"
    get_settings.cache_clear()


def test_status_shows_main(seeded, status_env):
    write_screenshots(screenshots_root(status_env), [f"{SHA[k]}.png" for k in "acf"])
    out = CliRunner().invoke(cli, ["status"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("main:"))
    assert lines[at - 1].startswith("gate:")  # right after the gate's lines
    assert re.fullmatch(r"main:   green ffffffffff \(checked 1\ds ago\) · 4/6 shas green \(67%\) · "
                        r"time to green p50 4m10s p95 4m55s · 2 reverts \(1 landed, 1 failed\) · "
                        r"culprits type 1, test 1 · flaky 1 observed, 2 quarantined, 1 released", lines[at]), lines[at]
    assert lines[at + 1] == f"  quarantined: {FLAKY_1} (2 observations, 1/3 passes to release, fix task runmt002)"
    assert lines[at + 2] == f"  quarantined: {FLAKY_2} (3 observations, 0/3 passes to release)"
    assert re.fullmatch(r"  last red dddddddddd at \d\d:\d\d:\d\d: npx tsc --noEmit · culprit runmt001 "
                        r"\(c0ffee0000\) · revert runmt003 \(landed\)", lines[at + 3]), lines[at + 3]
    assert lines[at + 4].startswith("llm:")
    body = json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)
    main = body["main"]
    assert main["main"]["sha"] == SHA["f"] and main["health"]["reverts"]["landed"] == 1
    assert main["screenshots"] == [f"{SHA[k]}.png" for k in "fca"] and len(main["quarantined"]) == 2
    assert main["last_red"]["revert_task"] == "runmt003"


def test_main_lines_of_a_red_main():
    main = {"main": {"sha": "1" * 40, "result": "red", "at": "2030-01-01T10:00:00+00:00", "age_s": 75.0},
            "health": {"shas_checked": 1, "green_share": 0.0, "time_to_green_s": {"spells": 0}, "red_for_s": 3725.0,
                       "reverts": {"made": 0, "landed": 0, "failed": 0}, "culprits_by_kind": {}},
            "shas_green": 0, "interval_s": 300.0,
            "flaky": {"observed": 0, "quarantined": 0, "released": 0, "release_after": 3}, "quarantined": [],
            "last_red": {"sha": "1" * 40, "at": "2030-01-01T10:00:00+00:00", "why": "npx vitest run",
                         "failing_tests": ["src/a.test.ts > a", "src/b.test.ts > b"], "failing_count": 2,
                         "culprit_task": None, "culprit_sha": None, "revert_task": None, "revert_status": None,
                         "revert_landed": None, "action": None, "bisect_reason": "no good commit in range"}}
    assert _main_lines(main) == [
        "main:   red 1111111111 (checked 1m15s ago, red for 1h02m) · 0/1 shas green (0%)",
        "  last red 1111111111 at 10:00:00: npx vitest run (src/a.test.ts > a +1) · no revert: no good commit in range",
    ]
