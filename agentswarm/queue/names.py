"""The wire names of every Celery task, the queues, and the priority mapping. No imports: anyone may use it.

The names are what Redis messages, Flower and `celery call` carry; they stay stable when code
moves (a message queued before an upgrade still finds its handler), so they keep their
historical `agentswarm.tasks.` prefix.

Priorities. A task's priority runs 1 (most urgent) to 10 (least), as in the seed. On the Redis
transport Celery's 0 is the most urgent and 9 the least, so priority p is sent as p - 1.
"""

from __future__ import annotations

PLAN_TICK = "agentswarm.tasks.plan_tick"
RUN_TASK = "agentswarm.tasks.run_task"
MERGE_BRANCH = "agentswarm.tasks.merge_branch"
RECONCILE_TICK = "agentswarm.tasks.reconcile_tick"
MONITOR_TICK = "agentswarm.tasks.monitor_tick"
GATE_RUN = "agentswarm.tasks.gate_run"
# For people: `celery -A agentswarm.celery_app call agentswarm.add_task --kwargs '{"description": ...}'`.
ADD_TASK = "agentswarm.add_task"

QUEUES = ("plan", "work", "merge", "gate", "reconcile", "monitor")
CONTROL_QUEUES = ("plan", "reconcile", "monitor")  # fed by beat's ticks
# The reconciler gets a process of its own: its checks and bisections take minutes, never planning's turn.
# Gate runs get a process (or machines) of their own: the merge queue hands them out and waits for their results.
PROCESS_QUEUES = (("plan", "monitor"), ("reconcile",), ("work",), ("merge",), ("gate",))
# A person's add_task goes to the control worker's `plan` queue: handled in seconds however deep `work` is.
QUEUE_OF = {PLAN_TICK: "plan", RUN_TASK: "work", MERGE_BRANCH: "merge", RECONCILE_TICK: "reconcile",
            MONITOR_TICK: "monitor", ADD_TASK: "plan", GATE_RUN: "gate"}

PRIORITY_MOST_URGENT = 1
PRIORITY_LEAST_URGENT = 10
UNSET_CELERY_PRIORITY = PRIORITY_LEAST_URGENT - 1


def celery_priority(task_priority: int) -> int:
    """Map a task priority (1 most urgent .. 10 least) to the Redis transport's 0..9."""
    p = min(max(int(task_priority), PRIORITY_MOST_URGENT), PRIORITY_LEAST_URGENT)
    return p - 1
