"""A branch whose tests hang: named within about two run budgets, not one full timeout per bisection step.

The gate's second command stands for `vitest related {files}`: it hangs when a changed file is a
`*.hang` test. Small budgets (seconds); what is asserted is how many runs timed out and which
branch was blamed, with a generous bound on the time.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from agentswarm.config import Settings
from agentswarm.db import Event, session_scope
from agentswarm.merge.gate import budget_s
from agentswarm.merge.queue import merge_task
from tests.git.hubkit import git
from tests.merge.test_gate_batch import NO_BROKEN, attempts, complete

RELATED = "for f in {files}; do case $f in *.hang) echo \"running $f\"; sleep 3600;; esac; done"
BUDGET = {"GATE_TIMEOUT_S": "60", "GATE_TIMEOUT_BASE_S": "6", "GATE_TIMEOUT_PER_BRANCH_S": "2"}


def test_the_budget_grows_with_the_branches_tested_up_to_gate_timeout_s():
    s = Settings(gate_timeout_s=600, gate_timeout_base_s=120, gate_timeout_per_branch_s=30)
    assert [budget_s(s, n, False) for n in (1, 4, 16, 64)] == [150, 240, 600, 600]
    assert budget_s(s, 1, True) == 600  # the full commands
    assert budget_s(Settings(gate_timeout_s=60), 1, False) == 60  # an older GATE_TIMEOUT_S still caps it


def test_a_hanging_branch_is_blamed_within_two_budgets_and_the_others_land(gate_hub, db):
    hub, root, run_id, configure = gate_hub
    settings = configure([NO_BROKEN, RELATED], **BUDGET)
    ids = [complete(db, hub, root, run_id, "a", {"a.txt": "a\n"}),
           complete(db, hub, root, run_id, "b", {"b.txt": "b\n"}),
           complete(db, hub, root, run_id, "hangs", {"slow.hang": "forever\n"}),
           complete(db, hub, root, run_id, "d", {"d.txt": "d\n"})]
    started = time.monotonic()
    assert merge_task(ids[0], settings) == "merged"
    took = time.monotonic() - started
    by_task = {r.task_id: r for r in attempts(db)}
    assert {t: r.status for t, r in by_task.items()} == {ids[0]: "merged", ids[1]: "merged", ids[2]: "rejected",
                                                          ids[3]: "merged"}
    culprit = by_task[ids[2]].gate
    assert "running slow.hang" in culprit["output"] and "timed out" in culprit["output"]
    assert culprit["clashes_with"] is None
    assert "slow.hang" not in git(hub, "ls-tree", "--name-only", "main")
    with session_scope(db) as s:
        runs = [e.data for e in s.scalars(select(Event).where(Event.kind == "gate.run").order_by(Event.id))]
    hung = [r for r in runs if any(c["timed_out"] for c in r["commands"])]
    # The batch's run (its budget for four branches) and the hanging branch's probe (one branch): nothing more.
    assert [r["timeout_s"] for r in hung] == [budget_s(settings, 4, False), budget_s(settings, 1, False)]
    assert [r["stage"] for r in hung] == ["batch", "probe 3/4"]
    two_budgets = 2 * budget_s(settings, 4, False)
    assert sum(r["seconds"] for r in hung) < two_budgets + 30  # generous: sandboxes start slowly on a loaded machine
    assert took < two_budgets + 120
