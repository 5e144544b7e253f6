"""A gated batch: complete branches stacked on a base and tested before main moves (`merge.speculation` keeps a
line of them in the gate at once).

A batch takes up to GATE_BATCH_MAX complete, unlanded tasks (`gather`: waiting for the batch to fill while other
tasks are under way: GATE_BATCH_WAIT_S on an idle machine, up to GATE_BATCH_WAIT_BUSY_S on a saturated one),
stacks their recorded heads on its base with the configured strategy (`GatedMerge.stack`), and its tip is one
gate run. Green: main moves to the tip in one compare-and-swap (`land`). Red (`_after_red`): the stack is
bisected on main, GATE_PARALLEL prefixes at once; every green prefix lands at once; the branch whose prefix
turns red is tested again on the same tree (twice when tests failed, once for a type error), and either blamed
(it goes back to its author with the output) or, if the tree now passes, landed, and its failing tests observed
flaky (`lifecycle.flaky`): once quarantined, their files are left out of the gate's vitest commands, and a run
whose only failures are quarantined tests counts as green. A stack whose tests hung (a command past the run's
budget) is first probed branch by branch with the command that hung and each branch's own files: the first
branch whose probe hangs too is blamed without another run, so a hang costs about two budgets, not one per
bisection step.

Every gate run is a sandbox of its own, run by a gate worker (`merge.runs`, `merge.gate.run_gate`): nothing one
run's tree leaves behind is seen by the next.

Main only ever points at a commit whose tree the gate passed. Commits inside a landed stack are not tested one
by one: each is an ancestor of a tested tip, and nothing more is claimed for it.

Locking and crash safety: the merge lock is a session-level advisory lock on a connection of its own
(`db.locks.held_lock`), held while the line has work, while each decision (a landing, a culprit sent back, a
conflict) is committed as soon as it is made, so no task or feature row stays locked while the gate runs. Main
moves only to tested tips, before the landing is recorded: a merge worker killed mid-gate leaves main where it
was (or on a tested prefix), its connection's death frees the lock, and its successor takes over the line.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.chaos import strike
from agentswarm.config import GateMode, Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import GateRunRow, MergeAttempt, MergeStatus, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.db.states import MERGE_SETTLED, merges_given_up
from agentswarm.db.text import stored_text
from agentswarm.git.hub import main_sha
from agentswarm.git.landing import (
    Landing,
    MergeResult,
    MergeStrategy,
    Stacked,
    delete_branch,
    move_main,
    stack_on,
    tree_of,
)
from agentswarm.git.repo import GitError
from agentswarm.lifecycle.feedback import gate_feedback, send_back
from agentswarm.lifecycle.flaky import exclude_flags, file_of_test, observe, quarantined_names
from agentswarm.merge import runs
from agentswarm.merge.gate import GateOptions, GateRun, hung_command
from agentswarm.merge.records import (
    finish_landing,
    record_intent,
    record_landing,
    remote_push_main,
)

log = logging.getLogger(__name__)
POLL_S = 0.25
_batches: dict[str, int] = {}  # batches tested per hub in this process, for GATE_FULL_EVERY


@dataclass
class Entry:
    """One task's branch in a batch: its recorded head and, once stacked, the stack tip after it."""

    task: Task
    head: str
    position: int
    tip: str | None = None
    landed: list[str] = field(default_factory=list)


@dataclass
class Batch:
    """What one batch did, for the record and the caller."""

    id: str
    main_before: str
    runs: list[GateRun] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    culprits: list[str] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)
    held: str | None = None  # why nothing could be decided (the gate cannot run)

    def gate_seconds(self) -> float:
        return round(sum(r.seconds for r in self.runs), 2)


def candidates(db: Session, first: Task, limit: int) -> list[Task]:
    """Complete tasks of the run with no settled merge and not given up on, most urgent first, `first` always
    included. (A branch whose merge keeps failing, say its head is not in the hub, would otherwise be tried
    again in every batch for the rest of the run.)"""
    settled = select(MergeAttempt.task_id).where(MergeAttempt.status.in_(MERGE_SETTLED))
    rows = list(db.scalars(select(Task).where(
        Task.run_id == first.run_id, Task.status == TaskStatus.complete, Task.id != first.id,
        Task.id.not_in(settled), Task.id.not_in(merges_given_up()))
        .order_by(Task.priority, Task.finished_at, Task.id).limit(limit - 1)))
    return [first, *rows]


def cpu_pressure() -> float:
    """How saturated this machine's CPU is, 0 to 1: the share of the last ten seconds in which some runnable
    task waited for a core (Linux PSI, /proc/pressure/cpu), else the 1-minute load beyond one per core."""
    try:
        some = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
        return max(0.0, min(1.0, float(some.split("avg10=", 1)[1].split()[0]) / 100))
    except (OSError, IndexError, ValueError):
        return max(0.0, min(1.0, os.getloadavg()[0] / (os.cpu_count() or 1) - 1.0))


def batch_wait_s(settings: Settings, pressure: float) -> float:
    """GATE_BATCH_WAIT_S on an idle machine, growing to GATE_BATCH_WAIT_BUSY_S as its CPU saturates.

    A gate run costs the same CPU for one branch as for sixteen: while cores are free it costs the run
    nothing and a wait only lengthens each link of the features' dependency chain, but once the agents'
    checks and the gate compete for cores, fewer, larger batches land more commits per CPU-second.
    """
    busy = settings.gate_batch_wait_busy_s
    busy = 10 * settings.gate_batch_wait_s if busy is None else max(busy, settings.gate_batch_wait_s)
    return settings.gate_batch_wait_s + pressure * (busy - settings.gate_batch_wait_s)


def _under_way(db: Session, first: Task, limit: int) -> int:
    """How many other tasks of the run may still complete and join the batch (counted up to `limit`)."""
    return len(db.scalars(select(Task.id).where(
        Task.run_id == first.run_id, Task.id != first.id,
        Task.status.in_((TaskStatus.pending, TaskStatus.assigned, TaskStatus.running))).limit(limit)).all())


def gather(db: Session, first: Task, settings: Settings) -> list[Task]:
    """The batch: up to GATE_BATCH_MAX tasks, waiting for it to fill while other tasks of the run are under way.

    GATE_BATCH_WAIT_S at most on an idle machine; under CPU pressure the wait may stretch (`batch_wait_s`),
    but only while the batch is under half of what it could hold (GATE_BATCH_MAX, or fewer when fewer tasks
    are under way): past that a gate run's cost per branch barely falls, and the merge stage idling while
    branches queue would cap the landings at a batch per wait.
    """
    if settings.gate is GateMode.each:
        return [first]
    started = time.monotonic()
    short = started + settings.gate_batch_wait_s
    long = started + batch_wait_s(settings, cpu_pressure())
    while True:
        found = candidates(db, first, settings.gate_batch_max)
        now = time.monotonic()
        if len(found) >= settings.gate_batch_max or now >= long:
            return found
        under_way = _under_way(db, first, settings.gate_batch_max)
        enough = max(2, (min(settings.gate_batch_max, len(found) + under_way) + 1) // 2)
        if not under_way or (now >= short and len(found) >= enough):
            return found
        time.sleep(POLL_S)


def spread(lo: int, hi: int, parallel: int) -> list[int]:
    """Up to `parallel` prefix lengths strictly between lo (green) and hi (red), evenly spaced: one is the
    classic midpoint; two test both halves' ends at once."""
    k = min(parallel, hi - lo - 1)
    return sorted({lo + max(1, min(hi - lo - 1, round((hi - lo) * i / (k + 1)))) for i in range(1, k + 1)})


def _tip(entry: Entry) -> str:
    assert entry.tip is not None
    return entry.tip


def _live_event(kind: str, message: str, run_id: str, **data: Any) -> None:
    """An event committed now (the batch's own transaction commits only at its end): the gate seen live."""
    with session_scope() as db:
        record_event(db, kind, message, run_id=run_id, **data)


class GatedMerge:
    """One batch through the gate, inside the merge lock's transaction."""

    def __init__(self, db: Session, settings: Settings, tasks: list[Task], heads: dict[str, str], *,
                 base: str | None = None, batch_id: str | None = None) -> None:
        """`base`: what the batch is stacked on, main by default; a speculative batch is stacked on the tip of the
        batch ahead of it, and becomes main's successor only once that batch landed."""
        self.db, self.settings = db, settings
        self.hub = str(settings.hub_path.resolve())
        self.strategy = MergeStrategy(settings.merge_strategy.value)
        main = base or main_sha(settings.hub_path)
        if main is None:
            raise GitError(f"the hub at {self.hub} has no main")
        self.main = main
        self.batch = Batch(id=batch_id or uuid.uuid4().hex[:12], main_before=main)
        self.run_id = tasks[0].run_id
        self.entries = [Entry(t, heads[t.id], i) for i, t in enumerate(tasks)]
        n = _batches.get(self.hub, 0) + 1
        _batches[self.hub] = n
        self.full = bool(settings.gate_full_every) and n % settings.gate_full_every == 0
        self.started_at = datetime.now(UTC)
        self.landed: list[Entry] = []  # entries main moved over in this batch, in order
        # Bisected aside (while the line lands other batches): find and blame the culprit on this base, land nothing;
        # the innocent go back to the pool and are tested again on the main of their next batch.
        self.aside = False
        self.known_flaky = quarantined_names(db)  # tolerated if they still run (a command without {quarantined})
        self.exclude = exclude_flags(file_of_test(t) for t in self.known_flaky)

    # -- stacking and testing --------------------------------------------------------------------

    def stack(self, entries: list[Entry], base: str) -> list[Entry]:
        """Build entries on base in order; a textual conflict or a failure is settled now and dropped."""
        kept: list[Entry] = []
        tip = base
        for e in entries:
            out = stack_on(self.hub, tip, e.head, self.strategy, branch=e.task.branch,
                           message=f"{e.task.title or e.task.id} ({e.task.branch})")
            if out.status is Landing.MERGED and out.tip:
                e.tip, e.landed, tip = out.tip, out.landed, out.tip
                kept.append(e)
            elif out.status is Landing.ALREADY_MERGED:
                self._settle_plain(e, Landing.ALREADY_MERGED, out)
            else:
                self._settle_plain(e, out.status, out)
        return kept

    def ask(self, sha: str, base: str, size: int, stage: str, only: str | None = None, *,
            lane: int | None = None, spec: dict[str, Any] | None = None) -> str:
        """Hand one gate run to a gate worker (a sandbox of its own) on sha; `size` branches stacked on base;
        `only`: that one command. Its id."""
        _live_event("gate.testing", f"batch {self.batch.id}: {stage} ({size} branch(es)) at {sha[:10]}",
                    self.run_id, batch_id=self.batch.id, sha=sha, size=size, stage=stage)
        options = GateOptions(full=self.full and only is None, quarantined=self.exclude, branches=size, only=only)
        return runs.submit(self.settings, runs.Request(
            sha=sha, base=base, tree=tree_of(self.hub, sha), options=options, stage=stage, batch_id=self.batch.id,
            run_id=self.run_id, lane=lane, spec=spec))

    def took(self, row: GateRunRow) -> GateRun:
        """A finished run's result, as this batch counts it (quarantined flaky tests tolerated)."""
        run = runs.result_of(row)
        assert run is not None, f"gate run {row.id} has no result for tree {row.tree}"
        run.quarantine(self.known_flaky)
        self.batch.runs.append(run)
        _live_event("gate.run", f"batch {self.batch.id}: {run.result} in {run.seconds:.1f}s ({row.stage})",
                    self.run_id, batch_id=self.batch.id, stage=row.stage, size=int(row.options.get("branches") or 1),
                    gate_run=row.id, worker=row.worker, **run.summary())
        return run

    def test_many(self, asks: list[tuple[str, str, int, str]], only: str | None = None) -> list[GateRun]:
        """Several gate runs at once (sha, base, size, stage each), their results in the same order."""
        ids = [self.ask(sha, base, size, stage, only) for sha, base, size, stage in asks]
        done: dict[str, GateRun] = {}
        while len(done) < len(ids):
            rows = runs.wait_any(self.settings, [i for i in ids if i not in done])
            for i, row in rows.items():
                if row.state == "done" and runs.result_of(row) is not None:
                    done[i] = self.took(row)
        runs.mark(ids, "used")
        return [done[i] for i in ids]

    def test(self, sha: str, base: str, size: int, stage: str, only: str | None = None) -> GateRun:
        """One gate run on sha, waited for."""
        return self.test_many([(sha, base, size, stage)], only=only)[0]

    def land(self, entries: list[Entry], run: GateRun, extra: dict[str, Any] | None = None) -> bool:
        """Move main to the last entry's tip (tested green); False if main moved under us.

        Crash-consistent: the entries' `landing` rows are committed before main moves and become `merged` in the
        commit after (see `merge.records`); a crash in between is settled from git by the next merge.
        """
        tip = entries[-1].tip
        assert tip is not None
        gate = {"batch_size": len(self.entries), "result": run.result, "runs": len(self.batch.runs), "full": run.full,
                "commands": run.commands, "seconds": run.seconds, "quarantined": run.quarantined, **(extra or {})}
        rows = [record_intent(self.db, e.task, strategy=self.strategy.value, main_before=self.main, main_after=tip,
                              head=e.head, landed=e.landed, batch_id=self.batch.id, position=e.position,
                              tree=run.tree) for e in entries]
        for row in rows:
            row.gate = gate
        self.db.commit()
        strike("merge.before_cas")
        if not move_main(self.hub, tip, self.main):
            now = datetime.now(UTC)
            for row in rows:
                row.status, row.finished_at, row.error = MergeStatus.abandoned, now, "main moved under the batch"
            self.db.commit()
            return False
        strike("merge.after_cas")
        before, self.main = self.main, tip
        if self.settings.git_repo_url:
            remote_push_main(self.settings)
        for e, row in zip(entries, rows, strict=True):
            finish_landing(self.db, row, e.task)
            self.batch.merged.append(e.task.id)
            self.landed.append(e)
        self.db.commit()  # main moved: recorded at once (a crash before this is settled from the landing rows)
        log.debug("batch %s landed %d branch(es): main %s -> %s", self.batch.id, len(entries), before[:10], tip[:10])
        return True

    # -- a red stack ------------------------------------------------------------------------------

    def _after_red(self, pending: list[Entry], red: GateRun) -> list[Entry]:
        """A red stack is bisected; one whose tests hung is first probed branch by branch, in order (the command
        that hung, with each branch's own files, on its prefix), so that a hang costs one more run's budget rather
        than one per bisection step: the first probe that fails or hangs bounds the bisection."""
        command = hung_command(self.settings, red)
        if command is None or len(pending) < 2:
            return self._bisect(pending, red)
        base = self.main
        for i, e in enumerate(pending):
            assert e.tip is not None
            probe = self.test(e.tip, base, 1, f"probe {i + 1}/{len(pending)}", only=command)
            base = e.tip
            if probe.cannot_run:
                self._hold(pending, probe)
                return []
            if not probe.ok:
                return self._bisect(pending, probe, hi=i + 1, proof=probe if probe.timed_out else None)
        return self._bisect(pending, red)

    def _bisect(self, pending: list[Entry], red: GateRun, hi: int | None = None,
                proof: GateRun | None = None) -> list[Entry]:
        """Find the first branch whose prefix is red (within the first `hi`); land the green prefix; blame or pass
        it; restack the rest. `proof`: the hung run of branch `hi` alone, which a second run need not repeat."""
        lo, hi, hi_run = 0, hi or len(pending), red
        while hi - lo > 1:  # GATE_PARALLEL prefixes at once: both halves, or more, per round
            points = spread(lo, hi, self.settings.gate_parallel)
            tested = self.test_many([(_tip(pending[m - 1]), self.main, m, f"bisect {m}/{len(pending)}")
                                     for m in points])
            for m, run in zip(points, tested, strict=True):
                if run.cannot_run:
                    self._hold(pending, run)
                    return []
                if not run.ok:
                    hi, hi_run, proof = m, run, None
                    break
                lo = m  # green, and every prefix tested before it too
        if lo and not self.aside and not self.land(pending[:lo], self._green_run(pending[lo - 1])):
            return self.stack(pending, self._reread_main())
        suspect = pending[hi - 1]
        assert suspect.tip is not None
        again = proof or self.test(suspect.tip, self.main, 1, "confirm")
        if not again.ok and not again.cannot_run and not again.timed_out and again.failing_tests():
            # A failing test (unlike a type error) may be flaky: blame only a red that reproduces twice.
            again = self.test(suspect.tip, self.main, 1, "confirm again")
        if again.cannot_run:
            self._hold(pending[lo:], again)
            return []
        if again.ok:  # the same tree passed: the red did not reproduce
            tests = hi_run.failing_tests()
            self.known_flaky |= set(observe(self.db, tests, source="gate", tree=again.tree, run_id=self.run_id,
                                            settings=self.settings, output=hi_run.output))
            self.batch.flaky.append(suspect.task.id)
            record_event(self.db, "gate.flaky", f"{suspect.task.branch}: red, then green on the same tree"
                         + (f" ({', '.join(tests[:3])})" if tests else ""), run_id=self.run_id,
                         task_id=suspect.task.id, batch_id=self.batch.id, tests=tests, tree=again.tree)
            if self.aside:
                return []
            if not self.land([suspect], again, {"flaky": True, "flaky_tests": tests}):
                return self.stack(pending[hi - 1:], self._reread_main())
        else:
            self._blame(suspect, again, ahead=pending[:hi - 1] if self.aside else list(self.landed))
        return [] if self.aside else self.stack(pending[hi:], self.main)

    def _green_run(self, entry: Entry) -> GateRun:
        """The green run of this entry's tip (bisection tested it)."""
        return next(r for r in reversed(self.batch.runs) if r.sha == entry.tip and r.ok)

    def _blame(self, culprit: Entry, run: GateRun, ahead: list[Entry]) -> None:
        """The culprit goes back to its author; with branches ahead of it, check whether it fails alone."""
        clash: dict[str, str] | None = None
        if ahead and not run.timed_out:  # a hang is blamed on the branch whose tests hung
            alone = stack_on(self.hub, self.batch.main_before, culprit.head, self.strategy, branch=culprit.task.branch)
            if alone.status is Landing.MERGED and alone.tip:
                solo = self.test(alone.tip, self.batch.main_before, 1, "alone")
                if solo.ok:
                    partner = self._partner(culprit, ahead)
                    clash = {"task_id": partner.task.id, "branch": partner.task.branch,
                             "title": partner.task.title or ""}
        self.batch.culprits.append(culprit.task.id)
        tested_with = [e.task.branch for e in ahead]
        self._record(culprit, MergeStatus.rejected, main_before=self.main, main_after=None, tree=run.tree,
                     gate={"result": "red", "output": run.output, "commands": run.commands, "seconds": run.seconds,
                           "tested_with": tested_with, "clashes_with": clash, "tests": run.failing_tests()},
                     error=f"the gate failed on {culprit.task.branch}")
        why = (f"semantic conflict with task {clash['task_id']} ({clash['branch']})" if clash
               else "the branch breaks the gate's checks")
        record_event(self.db, "gate.culprit", f"{culprit.task.branch}: {why}", run_id=self.run_id,
                     task_id=culprit.task.id, batch_id=self.batch.id, clashes_with=clash,
                     tests=run.failing_tests(), tree=run.tree)
        feedback = gate_feedback("merge-queue", run.output, main=self.main, tested_with=tested_with,
                                 clashes_with=clash, commands=[c["command"] for c in run.commands])
        send_back(self.db, culprit.task, TaskStatus.complete, feedback, f"rejected by the merge queue's gate: {why}")
        self.db.commit()  # back with its author now, while the rest of the batch is tested

    def _partner(self, culprit: Entry, ahead: list[Entry]) -> Entry:
        """The branch ahead of the culprit it clashes with: the shortest prefix of `ahead` that turns it red."""
        lo, hi = 0, len(ahead)  # main_before + culprit is green; all of `ahead` + culprit is red
        while hi - lo > 1:
            mid = (lo + hi) // 2
            base = ahead[mid - 1].tip
            assert base is not None
            probe = stack_on(self.hub, base, culprit.head, self.strategy, branch=culprit.task.branch)
            if probe.status is not Landing.MERGED or not probe.tip:
                hi = mid
                continue
            run = self.test(probe.tip, self.batch.main_before, mid + 1, "find clash")
            if run.ok:
                lo = mid
            else:
                hi = mid
        return ahead[hi - 1]

    def _hold(self, pending: list[Entry], run: GateRun) -> None:
        """The gate cannot run (a missing tool, a failed install): nothing lands, the monitor retries later."""
        self.batch.held = run.cannot_run
        for e in pending:
            self._record(e, MergeStatus.failed, main_before=self.main, main_after=None, tree=run.tree,
                         gate={"result": "cannot-run", "output": run.output}, error=f"gate: {run.cannot_run}")
        record_event(self.db, "gate.cannot_run", run.cannot_run or "", run_id=self.run_id, batch_id=self.batch.id)
        self.db.commit()

    def _reread_main(self) -> str:
        main = main_sha(self.settings.hub_path)
        if main is None:
            raise GitError(f"the hub at {self.hub} lost its main")
        self.main = main
        return main

    # -- records ---------------------------------------------------------------------------------

    def _record(self, e: Entry, status: MergeStatus, *, main_before: str, main_after: str | None, tree: str | None,
                gate: dict[str, Any], error: str | None = None, conflict_files: list[str] | None = None) -> None:
        """A settlement other than a landing (rejected, failed); landings go through `land`."""
        now = datetime.now(UTC)
        self.db.add(MergeAttempt(
            task_id=e.task.id, branch=e.task.branch, strategy=self.strategy.value, status=status,
            main_before=main_before, main_after=main_after, conflict_files=conflict_files or [],
            commits_landed=[], error=stored_text(error, None),
            head_sha=e.head, batch_id=self.batch.id, position=e.position, tree_sha=tree,
            gate={"batch_size": len(self.entries), **gate}, started_at=self.started_at, finished_at=now,
            duration_ms=(now - self.started_at).total_seconds() * 1000))

    def _settle_plain(self, e: Entry, status: Landing, out: Stacked) -> None:
        """A branch settled without the gate: already on main, a textual conflict, or a git failure."""
        result = MergeResult(status=status, branch=e.task.branch, main_before=self.main,
                             main_after=self.main if status is Landing.ALREADY_MERGED else None,
                             conflict_files=out.conflict_files, error=out.error)
        attempt = record_landing(self.db, e.task, self.strategy.value, result, self.started_at, self.settings)
        attempt.head_sha, attempt.batch_id, attempt.position = e.head, self.batch.id, e.position
        if status is Landing.ALREADY_MERGED:
            self.batch.merged.append(e.task.id)
        self.db.commit()

    def _finish(self) -> None:
        b = self.batch
        record_event(self.db, "gate.batch", f"batch {b.id}: {len(b.merged)} landed, {len(b.culprits)} culprit(s), "
                     f"{len(b.runs)} gate run(s) in {b.gate_seconds():.1f}s", run_id=self.run_id, batch_id=b.id,
                     size=len(self.entries), landed=len(b.merged), culprits=b.culprits, flaky=b.flaky,
                     runs=len(b.runs), red=any(not r.ok for r in b.runs), seconds=b.gate_seconds(),
                     main=self.main, held=b.held)
        self.db.commit()  # every landing is recorded before any branch goes
        if self.settings.merge_delete_branch:
            for e in self.entries:
                if e.task.id in b.merged:
                    strike("merge.before_delete")
                    delete_branch(self.hub, e.task.branch, expected_sha=e.head)
