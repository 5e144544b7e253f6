"""Speculation: up to GATE_PARALLEL batches in the gate at once, each stacked on the tip of the one ahead of it.

The merge worker (holding the merge lock) keeps a line of lanes. Lane 0 is stacked on main, lane 1 on lane
0's tip, and so on; each lane's tip is a gate run handed to the gate workers (`merge.runs`), all running at
once. Results are taken in order:

- lane 0 green: main moves to its tip (compare-and-swap from its base, which is main), and lane 1, stacked on
  exactly that tip, is now first;
- lane 0 red: every lane behind it is cancelled (its gate run stopped where it runs, not waited for), lane 0 is
  bisected on main with GATE_PARALLEL prefixes tested at once, its green prefix lands, its culprit goes back to
  its author (or, red then green on the same tree, lands as flaky), and what it did not decide, with the
  cancelled lanes' branches, goes back to the pool to be stacked again on the new main;
- lane 0 cannot run: nothing lands, the lanes are cancelled, and the monitor tries the branches again later.

A new lane starts while fewer than GATE_PARALLEL are in flight, once enough branches wait: a full batch at
once, else a batch every (recent run time / GATE_PARALLEL) seconds, so that batches arrive at the gate as
evenly as its runs finish. With nothing in flight the first batch is gathered as the serial gate did
(`batch.gather`). GATE_PARALLEL=1 is the serial gate.

Crash safety: main moves only to a tip whose own tree passed (the result names the tree it tested, and one for
another tree is refused). Each lane's gate run records what it stacked (tasks, heads, tips); a merge worker
that takes over adopts the runs whose chain starts at main and whose branches are still unlanded, takes their
results (or has them run again if their worker died), and cancels the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentswarm.config import GateMode, Settings
from agentswarm.db.events import record_event
from agentswarm.db.models import GateRunRow, MergeAttempt, Task, TaskStatus
from agentswarm.db.session import session_scope
from agentswarm.db.states import MERGE_SETTLED, merges_given_up
from agentswarm.git.hub import main_sha
from agentswarm.git.repo import GitError
from agentswarm.merge import runs
from agentswarm.merge.batch import Batch, Entry, GatedMerge, gather
from agentswarm.merge.gate import GateRun
from agentswarm.merge.records import recorded_head

log = logging.getLogger(__name__)
WAIT_S = 0.5  # how long the line waits for a result before it looks at the pool again
MAX_LOST = 64  # compare-and-swaps lost in a row (someone else writes main) before the line stops


@dataclass
class Lane:
    """One batch in the line: stacked on `base`, its tip in the gate as gate run `gate_id`."""

    merge: GatedMerge
    entries: list[Entry]
    base: str
    gate_id: str
    started: float = field(default_factory=time.monotonic)

    @property
    def tip(self) -> str:
        tip = self.entries[-1].tip
        assert tip is not None
        return tip

    def task_ids(self) -> list[str]:
        return [e.task.id for e in self.entries]

    def spec(self) -> dict[str, Any]:
        return spec_of(self.entries)


def spec_of(entries: list[Entry]) -> dict[str, Any]:
    return {"entries": [{"task_id": e.task.id, "head": e.head, "tip": e.tip, "landed": e.landed,
                         "position": e.position} for e in entries]}


class Line:
    """The speculative line of one run's batches, inside the merge lock (`merge_task`)."""

    def __init__(self, db: Session, settings: Settings, first: Task) -> None:
        self.db, self.settings, self.first = db, settings, first
        self.run_id = first.run_id
        self.lanes: deque[Lane] = deque()
        self.batches: list[Batch] = []
        self.durations: deque[float] = deque(maxlen=8)  # recent batch runs' seconds
        self.last_start = 0.0
        self.held: str | None = None
        self.held_tasks: list[str] = []
        self.wasted = 0
        self.lost = 0  # landings lost in a row because main moved under the line
        self.aside: dict[threading.Thread, set[str]] = {}  # red batches bisected while the line goes on
        self.aside_lock = threading.Lock()

    # -- the pool ---------------------------------------------------------------------------------------------

    def in_line(self) -> set[str]:
        """The tasks in a lane, or in a red batch being bisected aside."""
        with self.aside_lock:
            aside = set().union(*self.aside.values()) if self.aside else set()
        return {t for lane in self.lanes for t in lane.task_ids()} | aside

    def pool(self, limit: int) -> list[Task]:
        """Complete, unlanded tasks of the run not in a lane, most urgent first (`first` first while it waits)."""
        settled = select(MergeAttempt.task_id).where(MergeAttempt.status.in_(MERGE_SETTLED))
        taken = self.in_line()
        rows = [t for t in self.db.scalars(select(Task).where(
            Task.run_id == self.run_id, Task.status == TaskStatus.complete, Task.id.not_in(settled),
            Task.id.not_in(merges_given_up())).order_by(Task.priority, Task.finished_at, Task.id)
            .limit(limit + len(taken) + 1)) if t.id not in taken]
        rows.sort(key=lambda t: t.id != self.first.id)
        return rows[:limit]

    def _under_way(self) -> int:
        return len(self.db.scalars(select(Task.id).where(
            Task.run_id == self.run_id,
            Task.status.in_((TaskStatus.pending, TaskStatus.assigned, TaskStatus.running))).limit(1)).all())

    def _run_time(self) -> float:
        """The gate's run time: the median of the run's recent lane runs (this line's, or an earlier line's), else
        the age of the first lane in flight (its run takes at least that long)."""
        if not self.durations:
            self.durations.extend(float(x or 0.0) for x in self.db.scalars(select(GateRunRow.seconds).where(
                GateRunRow.run_id == self.run_id, GateRunRow.lane.is_not(None), GateRunRow.seconds.is_not(None),
                GateRunRow.state == "done").order_by(GateRunRow.finished_at.desc()).limit(8)))
        if self.durations:
            return max(self.settings.gate_delay_s, sorted(self.durations)[len(self.durations) // 2])
        return time.monotonic() - self.lanes[0].started if self.lanes else 0.0

    def _spacing(self) -> float:
        """Seconds between batches while others are in flight: the gate's run time spread over its lanes."""
        return max(self.settings.gate_batch_wait_s, self._run_time() / self.settings.gate_parallel)

    def _next_batch(self) -> list[Task]:
        """The tasks of a new lane now, or [] (not now: the line is full, nothing waits, or it is too soon).

        A lane is a slot of the gate for a whole run: a full batch takes one at once; once the gate's run time is
        known (a lane run of the run finished), a batch at least half full once a spacing (run time /
        GATE_PARALLEL) passed since the last lane started, and a smaller one after two. Until then only full
        batches start beside the first lane: it is running, so the gate never idles waiting for them."""
        if len(self.lanes) >= self.settings.gate_parallel:
            return []
        if not self.lanes:
            found = self.pool(self.settings.gate_batch_max)
            if not found:
                return []
            self.db.commit()  # nothing of ours stays locked while the batch fills
            return [t for t in gather(self.db, found[0], self.settings) if t.id not in self.in_line()]
        found = self.pool(self.settings.gate_batch_max)
        if not found:
            return []
        if len(found) >= self.settings.gate_batch_max or not self._under_way():
            return found
        if not self._run_time_known():  # the first lanes: full batches only, until a run's time is known
            return []
        waited = time.monotonic() - self.last_start
        spacing = self._spacing()
        half = len(found) >= (self.settings.gate_batch_max + 1) // 2
        return found if waited >= 2 * spacing or (half and waited >= spacing) else []

    def _run_time_known(self) -> bool:
        self._run_time()
        return bool(self.durations)

    # -- the line ---------------------------------------------------------------------------------------------

    def start_lane(self, tasks: list[Task]) -> bool:
        """Stack these tasks on the last lane's tip (or main) and hand the tip to the gate; False if none stacked."""
        heads: dict[str, str] = {}
        for t in tasks:
            head = recorded_head(self.db, t)
            if head is not None:
                heads[t.id] = head
        tasks = [t for t in tasks if t.id in heads]
        if not tasks:
            return False
        base = self.lanes[-1].tip if self.lanes else self._main()
        merge = GatedMerge(self.db, self.settings, tasks, heads, base=base)
        kept = merge.stack(merge.entries, base)
        if not kept:
            merge._finish()
            return False
        position = len(self.lanes)
        gate_id = merge.ask(kept[-1].tip or "", base, len(kept), "batch" if position == 0 else f"lane {position}",
                            lane=position, spec=spec_of(kept))
        self.lanes.append(Lane(merge, kept, base, gate_id))
        self.last_start = time.monotonic()
        return True

    def _main(self) -> str:
        main = main_sha(self.settings.hub_path)
        if main is None:
            raise GitError(f"the hub at {self.settings.hub_path} has no main")
        return main

    def cancel(self, lanes: list[Lane], why: str) -> None:
        """Take these lanes off the line and stop their gate runs (their branches go back to the pool)."""
        if not lanes:
            return
        ids = [lane.gate_id for lane in lanes]
        runs.cancel(ids)
        self.wasted += len(ids)
        for lane in lanes:
            self.lanes.remove(lane)
        record_event(self.db, "gate.cancelled", f"{len(ids)} speculative run(s) cancelled: {why}",
                     run_id=self.run_id, gate_runs=ids, tasks=sum((lane.task_ids() for lane in lanes), []))
        self.db.commit()

    def run(self) -> None:
        self.adopt()
        while True:
            while self.held is None:
                tasks = self._next_batch()
                if not tasks or not self.start_lane(tasks):
                    break
            if self.held is not None:
                break
            if not self.lanes:
                if not self.bisecting():
                    break
                time.sleep(WAIT_S)  # the innocent of a red batch come back to the pool when its bisection ends
                continue
            head = self.lanes[0]
            self.db.commit()  # nothing read stays open while the line waits
            rows = runs.wait_any(self.settings, [head.gate_id], timeout=WAIT_S,
                                 watch=[lane.gate_id for lane in self.lanes])
            row = rows.get(head.gate_id)
            if row is None or row.state == "cancelled":  # someone cancelled it (a person, a successor): start over
                self.lanes.popleft()
                self.cancel(list(self.lanes), "the run ahead of them was cancelled")
                continue
            if row.state != "done" or runs.result_of(row) is None:
                continue
            self.decide(head, row)
        self.cancel(list(self.lanes), "the line is held")
        for thread in list(self.aside):  # the merge lock covers every decision a bisection makes
            thread.join()

    def decide(self, head: Lane, row: GateRunRow) -> None:
        """The first lane's result is in: land it, or handle its red, or hold."""
        merge, run = head.merge, head.merge.took(row)
        self.durations.append(run.seconds)
        self.lanes.popleft()
        if run.cannot_run:
            runs.mark([head.gate_id], "held")
            self.cancel(list(self.lanes), "the run ahead of them cannot run")
            merge._hold(head.entries, run)
            self.held = run.cannot_run
            self.held_tasks = head.task_ids()
        elif run.ok:
            if merge.land(head.entries, run):
                runs.mark([head.gate_id], "landed")
                self.lost = 0
            else:  # main moved under the line (someone else wrote it): everything is stacked again
                runs.mark([head.gate_id], "stale")
                self.cancel(list(self.lanes), "main moved under the line")
                self.lost += 1
                if self.lost >= MAX_LOST:
                    self.held = f"main moved under the line {self.lost} times in a row"
        else:
            runs.mark([head.gate_id], "red")
            self.cancel(list(self.lanes), f"batch {merge.batch.id} ahead of them is red")
            if self.settings.gate_parallel > 1:  # found aside: the line goes on landing the others meanwhile
                self.bisect_aside(head, run)
                return
            merge._after_red(head.entries, run)  # what it leaves undecided goes back to the pool
            if merge.batch.held:  # a bisection run could not run: the line stops, the monitor tries again
                self.held = merge.batch.held
                decided = {*merge.batch.merged, *merge.batch.culprits}
                self.held_tasks = [t for t in head.task_ids() if t not in decided]
        merge._finish()
        self.batches.append(merge.batch)

    def bisecting(self) -> bool:
        with self.aside_lock:
            return bool(self.aside)

    def bisect_aside(self, head: Lane, red: GateRun) -> None:
        """Bisect a red batch in a thread of its own, on the main it was tested on, GATE_PARALLEL prefixes at once:
        its culprit is blamed (or its red observed flaky), nothing of it lands; its branches stay out of the pool
        until then, and the innocent come back to it to be stacked on the main of their next batch."""
        spec, heads = spec_of(head.entries), {e.task.id: e.head for e in head.entries}
        thread = threading.Thread(target=self._aside, args=(head.merge.batch.id, head.base, spec, heads, red),
                                  name=f"bisect-{head.merge.batch.id[:6]}", daemon=True)
        with self.aside_lock:
            self.aside[thread] = set(heads)
        thread.start()

    def _aside(self, batch_id: str, base: str, spec: dict[str, Any], heads: dict[str, str], red: GateRun) -> None:
        try:
            with session_scope() as db:
                tasks = [db.get(Task, e["task_id"]) for e in spec["entries"]]
                merge = GatedMerge(db, self.settings, [t for t in tasks if t is not None], heads, base=base,
                                   batch_id=batch_id)
                for entry, e in zip(merge.entries, spec["entries"], strict=True):
                    entry.tip, entry.landed, entry.position = e["tip"], list(e.get("landed") or []), int(e["position"])
                merge.aside = True
                merge.batch.runs.append(red)
                merge._after_red(merge.entries, red)
                merge._finish()
        except Exception:  # noqa: BLE001 - its branches go back to the pool and make another batch
            log.exception("bisecting batch %s aside failed", batch_id)
        finally:
            with self.aside_lock:
                self.aside.pop(threading.current_thread(), None)

    # -- taking over ------------------------------------------------------------------------------------------

    def adopt(self) -> None:
        """Take over the lanes a dead merge worker left: the chain of batch runs from main whose branches are all
        still complete, unlanded and at their recorded heads; every other unused batch run is cancelled."""
        rows = list(self.db.scalars(select(GateRunRow).where(
            GateRunRow.run_id == self.run_id, GateRunRow.spec.is_not(None), GateRunRow.lane.is_not(None),
            GateRunRow.outcome.is_(None), GateRunRow.state.in_(("queued", "running", "done")))
            .order_by(GateRunRow.created_at, GateRunRow.lane)))
        if not rows:
            return
        base, adopted = self._main(), []
        for row in rows:
            lane = self._lane_of(row, base)
            if lane is not None and len(self.lanes) < self.settings.gate_parallel:
                self.lanes.append(lane)
                adopted.append(row.id)
                base = lane.tip
        orphans = [r.id for r in rows if r.id not in adopted]
        runs.cancel(orphans, "orphaned")
        for row in rows:  # its message may be lost with the worker (or, inline, died with it): sent again
            if row.id in adopted and row.state == "queued":
                runs.dispatch(self.settings, row.id)
        record_event(self.db, "gate.adopted", f"took over {len(adopted)} run(s) in flight, cancelled "
                     f"{len(orphans)}", run_id=self.run_id, adopted=adopted, cancelled=orphans)
        self.db.commit()

    def _lane_of(self, row: GateRunRow, base: str) -> Lane | None:
        if row.base != base or not row.spec.get("entries"):
            return None
        taken = self.in_line()
        settled = set(self.db.scalars(select(MergeAttempt.task_id).where(MergeAttempt.status.in_(MERGE_SETTLED))))
        tasks, heads = [], {}
        for e in row.spec["entries"]:
            task = self.db.get(Task, e["task_id"])
            if task is None or task.status != TaskStatus.complete or task.id in settled or task.id in taken \
                    or recorded_head(self.db, task) != e["head"]:
                return None
            tasks.append(task)
            heads[task.id] = e["head"]
        merge = GatedMerge(self.db, self.settings, tasks, heads, base=base, batch_id=row.batch_id)
        for entry, e in zip(merge.entries, row.spec["entries"], strict=True):
            entry.tip, entry.landed, entry.position = e["tip"], list(e.get("landed") or []), int(e["position"])
        return Lane(merge, merge.entries, base, row.id)


def merge_line(db: Session, first: Task, settings: Settings) -> str:
    """Take `first` (a complete, unlanded task) and every other one of its run through the speculative line.

    Called by the merge queue inside the transaction that holds the merge lock. Returns what became of `first`:
    merged, rejected, conflict, failed or held.
    """
    if settings.gate is GateMode.each:
        settings = settings.model_copy(update={"gate_batch_max": 1})
    line = Line(db, settings, first)
    line.run()
    if first.id in line.held_tasks:
        return "held"
    status = db.scalar(select(MergeAttempt.status).where(MergeAttempt.task_id == first.id)
                       .order_by(MergeAttempt.id.desc()).limit(1))
    if status is not None:
        return str(status.value if hasattr(status, "value") else status)
    return "held" if line.held else "waiting"
