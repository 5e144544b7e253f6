"""Realistic sample rows for the dashboard: one active run mid-flight (also `python -m tests.dashboard.sample`)."""

from __future__ import annotations

import json
import os
import random
import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from agentswarm.db.models import (
    Event,
    Feature,
    FlakyStatus,
    FlakyTest,
    HandoffRecord,
    LLMCall,
    MainCheck,
    MergeAttempt,
    Run,
    Task,
)

HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">'
CATEGORIES = {"rendering": 9, "world": 8, "player": 6, "physics": 5, "ui": 7, "audio": 3}
TITLES = [
    "Greedy meshing for chunk geometry", "Frustum culling of chunks", "Block placement raycast",
    "Day/night sky shader", "Inventory hotbar UI", "Perlin terrain heightmap", "Water surface shader",
    "Player AABB collision", "Chunk save/load to IndexedDB", "Texture atlas loader", "Crosshair overlay",
    "Ambient occlusion per vertex", "Jumping and gravity", "Tree generation", "Cave carving with 3D noise",
    "Settings menu (FOV, render distance)", "Footstep sounds", "Block break particles", "Fog by distance",
    "Mouse-look with pointer lock", "Debug overlay (F3)", "Biome blending", "Light propagation BFS",
    "Fix: tsc error in chunk.ts", "Resolve conflict: src/world/chunk.ts", "Sprinting and FOV kick",
]
SCOPES = ["src/render/", "src/world/", "src/player/", "src/ui/", "src/physics/", "src/audio/", "src/world/chunk.ts"]


def _transcript(title: str, start: float, ok: bool) -> str:
    lines = [
        {"t": start, "kind": "note", "event": "checkout", "branch": "swarm/x", "agent": "builtin"},
        {"t": start + 0.1, "kind": "system", "content": "You are a coding agent working in a git checkout..."},
        {"t": start + 0.2, "kind": "user", "content": f"Task: {title}\nScope: src/\nAcceptance: npm test passes"},
        {"t": start + 3.1, "kind": "assistant", "step": 1, "content": "I'll look at the existing code first.",
         "tool_calls": [{"id": "c1", "name": "run", "arguments": json.dumps({"command": "ls src && cat src/main.ts"})}],
         "prompt_tokens": 5210, "completion_tokens": 96, "latency_ms": 2900},
        {"t": start + 3.4, "kind": "tool", "id": "c1", "name": "run",
         "result": "exit 0\nmain.ts  render/  world/\nimport { Renderer } from './render/renderer';\n<script>x</script>"},
        {"t": start + 9.8, "kind": "assistant", "step": 2, "content": "Now I'll write the implementation.",
         "tool_calls": [{"id": "c2", "name": "write_file",
                         "arguments": json.dumps({"path": "src/world/mesh.ts", "content": "export function mesh() {}"})}],
         "prompt_tokens": 6800, "completion_tokens": 1450, "latency_ms": 6200},
        {"t": start + 9.9, "kind": "tool", "id": "c2", "name": "write_file", "result": "wrote 1 file (812 bytes)"},
        {"t": start + 14.2, "kind": "assistant", "step": 3, "content": "",
         "tool_calls": [{"id": "c3", "name": "run", "arguments": json.dumps({"command": "npx tsc --noEmit && npm test"})}],
         "prompt_tokens": 8420, "completion_tokens": 60, "latency_ms": 4100},
        {"t": start + 31.0, "kind": "tool", "id": "c3", "name": "run",
         "result": "exit 0\n  ✓ mesh.test.ts (4 tests) 12ms\nTest Files  1 passed" if ok
         else "exit 1\nsrc/world/mesh.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'."},
    ]
    if ok:
        lines.append({"t": start + 33.0, "kind": "tool", "id": "c4", "name": "finish", "status": "complete",
                      "summary": f"Implemented {title.lower()} with tests."})
    else:
        lines.append({"t": start + 33.0, "kind": "llm_error", "step": 4, "error": "HTTP 503 from the endpoint"})
    lines.append({"t": start + 34.0, "kind": "outcome", "status": "complete" if ok else "failed", "error": None,
                  "commits": 1 if ok else 0})
    return "\n".join(json.dumps(x) for x in lines) + "\nnot json at all\n"


# The gate in the sample: 7 batches of 4 (3 red), 19 gate runs of 10 s (one in the batch now in test),
# 3 culprits (one clash, one hostile test name, one with only output), 1 flaky, 3 handoffs caught by presubmit.
GATE_BATCHES, GATE_RED, GATE_RUNS, GATE_CULPRITS, GATE_FLAKY, GATE_CAUGHT = 7, 3, 19, 3, 1, 3
IN_TEST = "b7e1c0ffee42"
HOSTILE_TEST = f"src/world/mesh.test.ts > mesh > {HOSTILE}"


def _sha(n: int, tag: str = "a") -> str:
    return (f"{tag}{n:04d}" * 10)[:40]


def _presubmit(i: int, ok: bool) -> list[dict]:
    """Presubmit runs of the i-th handoff: the first three failed once (then passed), the fourth had no toolchain."""
    def check(passed: bool, unavailable: bool = False) -> dict:
        code = 0 if passed else 127 if unavailable else 1
        return {"tree": _sha(i, "c"), "full": False, "ok": passed, "unavailable": unavailable, "seconds": 4.2,
                "commands": [{"command": "npx tsc --noEmit", "exit_code": code, "duration_s": 4.2, "timed_out": False}],
                "output": "" if passed else "$ npx tsc --noEmit\nsrc/world/mesh.ts(3,7): error TS2322"}
    if not ok:
        return []
    if i < GATE_CAUGHT:
        return [check(False), check(True)]
    return [check(False, unavailable=True)] if i == GATE_CAUGHT else [check(True)]


def fill_gate(db: Session, run: Run, tasks: list[Task], attempts: list[MergeAttempt], now: datetime) -> None:
    """Batches for the merge attempts, rejected culprits, gate events, and a batch in test right now."""
    def event(kind: str, at: datetime, message: str = "", task_id: str | None = None, **data) -> None:
        db.add(Event(run_id=run.id, task_id=task_id, kind=kind, message=message, data=data, created_at=at))

    def gate_run(batch: str, at: datetime, stage: str, size: int, sha: str, result: str) -> None:
        event("gate.testing", at - timedelta(seconds=10), f"batch {batch}: {stage}", batch_id=batch, sha=sha,
              size=size, stage=stage)
        event("gate.run", at, f"batch {batch}: {result} in 10.0s ({stage})", batch_id=batch, stage=stage, size=size,
              sha=sha, tree=sha, full=False, files=3, result=result, seconds=10.0, commands=[])

    running = [t for t in tasks if t.status == "running"]
    blocked = [t for t in tasks if t.status == "blocked"]
    culprits = {2: [running[0]], 5: [blocked[0], running[1]]}
    stages = {2: ["batch", "bisect 2/4", "confirm", "alone", "find clash"], 3: ["batch", "bisect 2/4", "confirm"],
              5: ["batch", "bisect 2/4", "bisect 1/4", "confirm", "rest", "confirm"]}
    main = _sha(0)
    for k in range(GATE_BATCHES):
        batch = f"b{k:03d}{'e' * 8}"
        rows = attempts[4 * k:4 * k + 4]
        at = max(a.finished_at for a in rows if a.finished_at)
        for pos, a in enumerate(rows):
            a.batch_id, a.position, a.head_sha = batch, pos, _sha(4 * k + pos, "d")
            if a.status == "merged":
                a.tree_sha = _sha(k, "f")
                a.gate = {"result": "green", "runs": len(stages.get(k, ["batch"])), "full": False, "batch_size": len(rows)}
                if k == 3 and pos == 1:
                    a.gate.update(flaky=True, flaky_tests=["src/world/chunk.test.ts > chunk > saves"])
                    event("gate.flaky", at, f"{a.branch}: red, then green on the same tree", task_id=a.task_id,
                          batch_id=batch, tests=a.gate["flaky_tests"], tree=a.tree_sha)
        for n, stage in enumerate(stages.get(k, ["batch"])):
            red = k in culprits and stage in ("batch", "bisect 1/4", "confirm", "find clash") or (k == 3 and n < 2)
            gate_run(batch, at - timedelta(seconds=10 * (len(stages.get(k, [])) - n)), stage, 4, _sha(k, "e"),
                     "red" if red else "green")
        landed = [a for a in rows if a.status == "merged"]
        if landed:
            main = landed[-1].main_after or main
        for i, c in enumerate(culprits.get(k, [])):
            clash = rows[0] if c is running[0] else None
            tests = [HOSTILE_TEST] if c is blocked[0] else []
            gate = {"result": "red", "batch_size": len(rows) + 1, "tested_with": [a.branch for a in landed],
                    "output": "$ npx vitest related --run src/world/mesh.ts\n\n FAIL  src/world/mesh.test.ts\n"
                              + ("AssertionError: expected 3 to be 4" if tests else "TypeError: chunk.get is not a function"),
                    "commands": [{"command": "npx vitest related --run src/world/mesh.ts", "exit_code": 1,
                                  "duration_s": 9.5, "timed_out": False}],
                    "clashes_with": {"task_id": clash.task_id, "branch": clash.branch, "title": "Greedy meshing"}
                    if clash else None, "tests": tests}
            if c is running[1]:
                gate["output"] = "$ npx tsc --noEmit\nsrc/player/move.ts(9,3): error TS2554: Expected 2 arguments"
            db.add(MergeAttempt(task_id=c.id, branch=c.branch, strategy="rebase", status="rejected", main_before=main,
                                head_sha=_sha(k, "9"), batch_id=batch, position=len(rows) + i, tree_sha=_sha(k, "8"),
                                gate=gate, error=f"the gate failed on {c.branch}", queued_at=at - timedelta(minutes=1),
                                started_at=at - timedelta(minutes=1), finished_at=at, duration_ms=60_000.0))
            event("gate.culprit", at, f"{c.branch}: the branch breaks the gate's checks", task_id=c.id,
                  batch_id=batch, clashes_with=gate["clashes_with"], tests=tests, tree=_sha(k, "8"))
        event("gate.batch", at, f"batch {batch}: {len(landed)} landed", batch_id=batch, size=len(rows),
              landed=len(landed), culprits=[c.id for c in culprits.get(k, [])],
              flaky=[a.task_id for a in rows if (a.gate or {}).get("flaky")], runs=len(stages.get(k, ["batch"])),
              red=k in culprits or k == 3, seconds=10.0 * len(stages.get(k, ["batch"])), main=main, held=None)
    gate_run(IN_TEST, now - timedelta(seconds=16), "batch", 4, _sha(99, "e"), "red")
    event("gate.testing", now - timedelta(seconds=6), f"batch {IN_TEST}: bisect 2/4", batch_id=IN_TEST,
          sha=_sha(98, "e"), size=2, stage="bisect 2/4")


# Main as the reconciler saw it: green, red (a type error; its culprit reverted), green, red (a test; fix
# tasks asked for), green with a quarantined test tolerated. Screenshots of the three green mains are kept.
MAIN_SHAS = [_sha(n, "5") for n in range(1, 6)]  # oldest first
MAIN_RESULTS = ["green", "red", "green", "red", "green"]
SHOTS = [f"{sha}.png" for sha, r in zip(MAIN_SHAS, MAIN_RESULTS, strict=True) if r == "green"]  # oldest first
FLAKY_TEST = "src/world/chunk.test.ts > chunk > saves"
QUARANTINED_TESTS = [FLAKY_TEST, f"src/ui/hud.test.ts > hud > {HOSTILE}"]


def png(width: int = 160, height: int = 120, seed: int = 0) -> bytes:
    """A real PNG: sky over grass, the horizon moved by the seed (what the page check's screenshot looks like)."""
    horizon = height // 2 + seed * 7 % (height // 3)
    rows = b"".join(b"\x00" + (bytes((110, 170, 255)) if y < horizon else bytes((70, 150, 60))) * width
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def write_screenshots(root: Path, names: list[str] = SHOTS) -> list[Path]:
    """The kept screenshots (oldest first, one second apart, as the reconciler leaves them)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = root / name
        path.write_bytes(png(seed=i))
        at = datetime.now(UTC).timestamp() - 60 + i
        os.utime(path, (at, at))
        paths.append(path)
    return paths


def fill_main(db: Session, run: Run, tasks: list[Task], now: datetime) -> None:
    """The reconciler's checks of main (see MAIN_SHAS) and the flaky tests it and the gate saw."""
    complete = [t for t in tasks if t.status == "complete"]
    tsc = {"command": "npx tsc --noEmit", "exit_code": 0, "s": 8.1, "timed_out": False, "tests": [], "kind": "command"}
    tests = {"command": "npx vitest run", "exit_code": 0, "s": 21.4, "timed_out": False, "tests": [], "kind": "command"}
    page = {"command": "page check (headless chromium)", "exit_code": 0, "s": 6.0, "timed_out": False, "tests": [],
            "kind": "page"}
    for i, (sha, result) in enumerate(zip(MAIN_SHAS, MAIN_RESULTS, strict=True)):
        finished = now - timedelta(minutes=40 - 9 * i)
        check = MainCheck(run_id=run.id, sha=sha, result=result, checks=[tsc, tests, page], started_at=finished
                          - timedelta(seconds=40), finished_at=finished, seconds=40.0,
                          screenshot=f"{sha}.png" if result == "green" else None)
        if i == 1:
            check.checks = [{**tsc, "exit_code": 2}, tests, page]
            check.output = "$ npx tsc --noEmit  (exit 2)\nsrc/player/move.ts(9,3): error TS2554: Expected 2 arguments"
            check.action, check.culprit_sha = "revert", _sha(7, "c")
            check.culprit_task_id, check.revert_task_id = complete[5].id, complete[6].id
            check.bisect = {"good": MAIN_SHAS[0], "bad": sha, "first_bad": _sha(7, "c"), "steps": 3, "seconds": 95.0}
        elif i == 3:
            check.checks = [tsc, {**tests, "exit_code": 1, "tests": [HOSTILE_TEST]}, page]
            check.output = "$ npx vitest run  (exit 1)\n FAIL  src/world/mesh.test.ts"
            check.failing_tests, check.action = [HOSTILE_TEST], "fix"
            check.bisect = {"reason": "the first bad commit is a merge of several branches"}
        elif i == 4:
            check.quarantined = [FLAKY_TEST]
        db.add(check)
    for n, name in enumerate(QUARANTINED_TESTS):
        db.add(FlakyTest(name=name, file=name.split(" > ")[0], status=FlakyStatus.quarantined, observations=2 + n,
                         passes_in_row=1 - n, last_source="reconciler" if n == 0 else "gate", run_id=run.id,
                         fix_task_id=complete[7].id if n == 0 else None, quarantined_at=now - timedelta(minutes=20 - n)))
    db.add(FlakyTest(name="src/audio/steps.test.ts > steps > plays", file="src/audio/steps.test.ts",
                     status=FlakyStatus.observed, observations=1, last_source="gate", run_id=run.id))
    db.add(FlakyTest(name="src/ui/menu.test.ts > menu > opens", file="src/ui/menu.test.ts",
                     status=FlakyStatus.released, observations=0, last_source="reconciler", run_id=run.id,
                     quarantined_at=now - timedelta(minutes=45), released_at=now - timedelta(minutes=10)))


def fill(db: Session, seed: int = 7) -> Run:
    """One active run with features, tasks in every state, handoffs, merges, LLM calls and events."""
    rnd = random.Random(seed)
    now = datetime.now(UTC)
    run = Run(id="run7f3a9c", status="active", demo=False, max_tasks=1000, max_tokens=50_000_000,
              max_dollars=100.0, deadline_at=now + timedelta(hours=5, minutes=13), planner_iterations=14,
              config={"model": "glm-5", "max_workers": 100, "planner_batch_size": 20},
              started_at=now - timedelta(minutes=47))
    db.add(run)
    for cat, n in CATEGORIES.items():
        for i in range(n):
            status = rnd.choice(["done", "done", "in_progress", "pending", "pending", "failed"])
            db.add(Feature(id=f"{cat}-{i:02d}", category=cat, title=f"{cat} feature {i}", status=status))
    states = ["running"] * 14 + ["assigned"] * 3 + ["pending"] * 9 + ["complete"] * 26 + ["failed"] * 4 \
        + ["blocked"] * 3 + ["cancelled"] * 2
    db.flush()
    tasks: list[Task] = []
    for i, state in enumerate(states):
        created = now - timedelta(minutes=46 - i * 0.6)
        title = TITLES[i % len(TITLES)] if i != 5 else HOSTILE + " Perlin terrain"
        kind = "fix" if title.startswith("Fix") else "conflict" if title.startswith("Resolve") else "feature"
        started = created + timedelta(seconds=rnd.randint(5, 60)) if state not in ("pending", "cancelled") else None
        finished = started + timedelta(seconds=rnd.randint(60, 400)) if started and state not in (
            "running", "assigned") else None
        t = Task(id=f"t{i:03d}{rnd.randrange(16**7):07x}", run_id=run.id, kind=kind, status=state, title=title,
                 description=f"{title}. Keep the change inside the scope and add a unit test. {HOSTILE}",
                 scope=[SCOPES[i % len(SCOPES)]], acceptance=["npm test passes"], priority=rnd.choice([2, 3, 5, 5, 7]),
                 branch="", attempts=0 if state in ("pending", "cancelled") else rnd.choice([1, 1, 1, 2]),
                 sandbox_id=f"sb-{i:03d}" if state in ("running", "assigned") else None,
                 summary=f"Implemented {title.lower()}." if state == "complete" else None,
                 error="tsc failed: TS2322 in src/world/mesh.ts" if state in ("failed", "blocked") else None,
                 created_at=created, updated_at=finished or started or created, started_at=started,
                 finished_at=finished, heartbeat_at=now - timedelta(seconds=rnd.randint(1, 9)) if started else None)
        t.branch = f"swarm/{t.id}"
        db.add(t)
        tasks.append(t)
    db.flush()
    handoffs: list[HandoffRecord] = []
    for t in tasks:
        if t.status in ("complete", "failed", "blocked"):
            ok = t.status == "complete"
            handoffs.append(HandoffRecord(task_id=t.id, attempt=max(1, t.attempts), status=t.status, summary=t.summary or "",
                           commits=["a1b2c3d"] if ok else [], files_changed=["src/world/mesh.ts"] if ok else [],
                           insertions=rnd.randint(20, 300), deletions=rnd.randint(0, 40), prompt_tokens=20430,
                           completion_tokens=1606, llm_calls=3, duration_s=34.0, error=t.error,
                           transcript=_transcript(t.title, t.started_at.timestamp(), ok), created_at=t.finished_at,
                           presubmit=_presubmit(len(handoffs), ok)))
    db.add_all(handoffs)
    completes = [t for t in tasks if t.status == "complete"]
    attempts: list[MergeAttempt] = []
    for j, t in enumerate(completes):
        status = "conflict" if j in (4, 17) else "failed" if j == 11 else "merged"
        finished = t.finished_at + timedelta(seconds=rnd.randint(2, 30))
        sha = f"{rnd.randrange(16**40):040x}"
        attempts.append(MergeAttempt(task_id=t.id, branch=t.branch, strategy="rebase", status=status,
                            main_before=f"{rnd.randrange(16**40):040x}", main_after=sha if status == "merged" else None,
                            conflict_files=["src/world/chunk.ts", "src/world/mesh.ts"] if status == "conflict" else [],
                            commits_landed=[sha] * rnd.randint(1, 3) if status == "merged" else [],
                            error="git merge-tree exited 128" if status == "failed" else None,
                            queued_at=t.finished_at, started_at=t.finished_at, finished_at=finished,
                            duration_ms=rnd.uniform(40, 900)))
    db.add_all(attempts)
    for t in tasks:
        for _ in range(3 if t.started_at else 0):
            db.add(LLMCall(run_id=run.id, task_id=t.id, role="worker", model="glm-5",
                           prompt_tokens=rnd.randint(40_000, 120_000), completion_tokens=rnd.randint(2_000, 9_000),
                           latency_ms=rnd.randint(800, 9000), cost_usd=rnd.uniform(0.05, 0.3),
                           created_at=t.started_at))
    db.add(Event(run_id=run.id, kind="run.started", message="budgets: 1000 tasks, 50000000 tokens, $100.00",
                 created_at=run.started_at))
    for t in tasks[:30]:
        db.add(Event(run_id=run.id, task_id=t.id, kind="task.assigned", message=f"sandbox sb-{t.id[:4]}",
                     created_at=t.created_at))
    for t in completes[:20]:
        db.add(Event(run_id=run.id, task_id=t.id, kind="merge.merged", message=f"{t.branch} -> main",
                     created_at=t.finished_at))
    fill_gate(db, run, tasks, attempts, now)
    fill_main(db, run, tasks, now)
    db.add(Event(run_id=run.id, kind="merge.conflict", message="src/world/chunk.ts, src/world/mesh.ts",
                 task_id=completes[4].id, created_at=now - timedelta(minutes=3)))
    db.add(Event(run_id=run.id, kind="reconcile.red", message=f"npx tsc --noEmit failed {HOSTILE}",
                 created_at=now - timedelta(minutes=2)))
    db.add(Event(run_id=run.id, kind="metrics.snapshot", message="", created_at=now - timedelta(minutes=1)))
    db.add(Event(run_id=run.id, kind="planner.planned", message="planned 12 tasks (iteration 14)",
                 created_at=now - timedelta(seconds=20)))
    db.flush()
    return run


if __name__ == "__main__":  # a demo database to look at: python -m tests.dashboard.sample [port]
    import sys

    import psycopg

    from agentswarm.config import load_settings
    from agentswarm.dashboard import serve
    from agentswarm.db.migrate import upgrade
    from agentswarm.db.session import session_scope

    admin, name = "postgresql://postgres@127.0.0.1:5432/postgres", "agentswarm_dashboard_sample"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    upgrade(url)
    with session_scope(url) as session:
        fill(session)
    import tempfile

    from agentswarm.reconcile.page import screenshots_root

    hub = Path(tempfile.mkdtemp(prefix="agentswarm-sample-")) / "hub.git"
    write_screenshots(screenshots_root(hub))
    serve("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8080, load_settings(database_url=url, hub_path=hub))
