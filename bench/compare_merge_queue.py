"""The merge-queue benchmark of this checkout against another revision's, in one run.

Checks the other revision out into a temporary git worktree, then runs each one's own
`bench/merge_queue.py` alternately (`--rounds` times per strategy, the order flipped every
round so neither always runs second), each in its own process with this interpreter. Prints one
JSON line: per strategy every run's figures and the median ratio to raw git of each side, and
how much this checkout's ratio moved against the other's.

    .venv/bin/python bench/compare_merge_queue.py --against 8f43c9f [--rounds 2] [--branches 500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("fast-forward", "rebase", "merge-commit")


def bench(checkout: Path, strategy: str, extra: list[str]) -> dict:
    """One run of checkout's own merge-queue benchmark; its JSON figures."""
    out = subprocess.run([sys.executable, "bench/merge_queue.py", "--strategy", strategy, *extra], cwd=checkout,
                         capture_output=True, text=True, check=True, env={"PYTHONPATH": str(checkout),
                                                                          "PATH": "/usr/local/bin:/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(other: Path, rounds: int, strategies: list[str], extra: list[str]) -> dict:
    """Alternate the two checkouts' runs; medians of the ratio to raw git and their change."""
    report: dict = {}
    for strategy in strategies:
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for r in range(rounds):
            order = [("before", other), ("after", ROOT)]
            for side, checkout in order if r % 2 == 0 else order[::-1]:
                runs[side].append(bench(checkout, strategy, extra))
        before = statistics.median(x["ratio"] for x in runs["before"])
        after = statistics.median(x["ratio"] for x in runs["after"])
        report[strategy] = {
            "ratio_before": round(before, 3), "ratio_after": round(after, 3),
            "ratio_change": round(after / before - 1, 4),
            "merges_per_s_before": [x["merges_per_s"] for x in runs["before"]],
            "merges_per_s_after": [x["merges_per_s"] for x in runs["after"]],
            "runs": runs,
        }
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", required=True, help="the revision to compare with (e.g. a commit before a change)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each side per strategy")
    p.add_argument("--strategy", action="append", choices=STRATEGIES, help="repeatable; default: all three")
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--branches", type=int, default=500)
    args = p.parse_args(argv)
    extra = ["--files", str(args.files), "--branches", str(args.branches)]
    with tempfile.TemporaryDirectory(prefix="merge-bench-against-") as tmp:
        other = Path(tmp) / "checkout"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach", str(other), args.against],
                       check=True)
        try:
            report = compare(other, args.rounds, args.strategy or list(STRATEGIES), extra)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    print(json.dumps({"against": args.against, "head": rev, "rounds": args.rounds, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
