"""A merge worker for the concurrency test: lands each branch named in a file, in that order.

    python -m tests.merge.merge_worker HUB STRATEGY BRANCHES_FILE OUT_FILE

Writes one JSON line per land_branch call. A `failed` result (main kept moving under it: with
no lock, a long replay can lose the race to the other worker many times over) is retried, as
the queue would re-queue it; only compare-and-swap protects main.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from agentswarm.git.landing import land_branch


def main(hub: str, strategy: str, branches_file: str, out_file: str) -> int:
    with open(branches_file) as f:
        branches = f.read().split()
    with open(out_file, "w") as out:
        for name in branches:
            for _ in range(100):
                r = land_branch(hub, name, strategy)
                out.write(json.dumps(dataclasses.asdict(r)) + "\n")
                if r.status != "failed":
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
