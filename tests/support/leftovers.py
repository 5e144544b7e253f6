"""What sandboxes a test left unterminated hold outside their directory: their quota's mounts and
their cgroups. Released when the session ends, so neither outlives it (pytest's tmp cleanup then works)."""

from __future__ import annotations

import json
from pathlib import Path

from agentswarm.sandbox import cgroups, disk


def release_under(base: Path) -> int:
    """Kill and remove the cgroups of every sandbox under base that still has its quota mounted, then
    unmount everything under base; the number of such sandboxes."""
    sandboxes = [point.parent for point in disk.mounts_under(base) if point.name == disk.DISK]
    for sbdir in sandboxes:
        try:
            groups = json.loads((sbdir / "meta.json").read_text()).get("cgroups") or []
        except (OSError, ValueError):
            groups = []
        cgroups.release(groups)
    disk.release(base)
    return len(sandboxes)
