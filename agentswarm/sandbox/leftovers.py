"""What sandboxes left unterminated hold outside their directory: their quota's mounts and their cgroups.

A worker killed mid-task, or a test that never terminated its sandbox, leaves them behind; `rm -rf`
cannot remove a mounted directory. `release_under(base)` kills and removes the cgroups of every
sandbox under base that still has its quota mounted, then unmounts everything under base.
`python -m agentswarm.sandbox.leftovers DIR` does it from a shell (`make clean` runs it on var/).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agentswarm.sandbox import cgroups, disk


def release_under(base: Path) -> int:
    """Release every leftover sandbox under base; the number of such sandboxes."""
    sandboxes = [point.parent for point in disk.mounts_under(base) if point.name == disk.DISK]
    for sbdir in sandboxes:
        try:
            groups = json.loads((sbdir / "meta.json").read_text()).get("cgroups") or []
        except (OSError, ValueError):
            groups = []
        cgroups.release(groups)
    disk.release(base)
    return len(sandboxes)


def main(argv: list[str]) -> int:
    for arg in argv or ["var"]:
        base = Path(arg).resolve()
        if base.exists():
            n = release_under(base)
            if n:
                print(f"released {n} sandbox(es) left under {arg} (their mounts and cgroups)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
