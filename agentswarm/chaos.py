"""Fault injection at named points of the pipeline, for the chaos tests. Off unless the environment asks.

`strike(point)` does nothing unless AGENTSWARM_CHAOS_AT lists the point (comma-separated, or `all`). Then, the
first time any process reaches it (a marker file in AGENTSWARM_CHAOS_DIR, created exclusively, makes it once per
point across processes), it runs AGENTSWARM_CHAOS_CMD through the shell and waits for it: the tests restart
Postgres there (`pg_ctl restart -m fast`) or kill Redis, so that the step right after finds the service gone.

The points sit where a crash is hardest to survive: the merge stage before main's compare-and-swap, between it and
the commit of its record, and before a landed branch is deleted; the work stage while a handoff is stored; the
planner while its tasks are stored.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

POINTS = ("merge.before_cas", "merge.after_cas", "merge.before_delete", "handoff.store", "plan.store")
AT_ENV, DIR_ENV, CMD_ENV = "AGENTSWARM_CHAOS_AT", "AGENTSWARM_CHAOS_DIR", "AGENTSWARM_CHAOS_CMD"


def strike(point: str) -> bool:
    """Run the chaos command if this point is armed and not struck yet; True when it ran."""
    armed = os.environ.get(AT_ENV)
    if not armed:
        return False
    names = {p.strip() for p in armed.split(",")}
    if point not in names and "all" not in names:
        return False
    marker = Path(os.environ.get(DIR_ENV) or ".") / f"struck-{point}"
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    command = os.environ.get(CMD_ENV, "")
    log.warning("chaos: %s: running %r", point, command)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)  # noqa: S602
    marker.write_text(f"{done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return True
