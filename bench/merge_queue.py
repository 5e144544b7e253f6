"""Merge-queue throughput: land synthetic task branches with `land_branch` and with raw plumbing.

Builds a bare repository (one `git fast-import`) with --files files on main and --branches
`swarm/task-N` branches forked from it, each changing one to three files in one to three
commits, about one in ten touching a line another branch also changes (so some conflict).
Lands them all with `land_branch(--strategy)` on one copy, and on a second copy with a minimal
loop of raw git (merge-tree, commit-tree, update-ref: one merge commit per branch, conflicts
skipped) as the baseline. Prints one JSON line.

    .venv/bin/python bench/merge_queue.py [--files 2000] [--branches 500] [--strategy fast-forward] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentswarm.git import repo as gitrepo  # noqa: E402
from agentswarm.git.landing import MergeStrategy, land_branch  # noqa: E402

LINES_PER_FILE = 24
DIR_SIZE = 50
_IDENT = "Agent <agent@swarm.local>"


@dataclass
class Synthetic:
    """A built repository: its path, its branches in landing order, each branch's files."""

    path: Path
    branches: list[str]
    changes: dict[str, dict[str, bytes]]  # branch -> path -> final content on that branch


def file_path(i: int) -> str:
    """The i-th file of the synthetic tree (DIR_SIZE files per directory)."""
    return f"src/mod{i // DIR_SIZE:03d}/file{i:05d}.ts"


def _content(i: int) -> list[bytes]:
    return [f"export const v{i}_{n} = {n};\n".encode() for n in range(LINES_PER_FILE)]


def _data(payload: bytes) -> bytes:
    return b"data %d\n%s\n" % (len(payload), payload)


def build_repo(path: Path, files: int, branches: int, seed: int, overlap: float = 0.1,
               multi_commit: float = 0.15) -> Synthetic:
    """Create a bare repo at path with `files` files on main and `branches` task branches."""
    if files < 3 or branches < 0:
        raise ValueError("need at least 3 files and a non-negative number of branches")
    rng = random.Random(seed)
    gitrepo.init_bare(path)
    out = bytearray()
    out += b"commit refs/heads/main\nmark :1\n"
    out += f"author {_IDENT} 1700000000 +0000\ncommitter {_IDENT} 1700000000 +0000\n".encode()
    out += _data(b"Initial synthetic tree\n")
    for i in range(files):
        out += f"M 100644 inline {file_path(i)}\n".encode() + _data(b"".join(_content(i)))
    out += b"\n"
    fresh = list(range(files))
    rng.shuffle(fresh)
    touched: list[tuple[int, int]] = []  # (file, line) changed by some earlier branch
    names, changes, mark = [], {}, 2
    for b in range(branches):
        name = f"swarm/task-{b:05d}"
        edits: list[tuple[int, int]] = []
        for _ in range(rng.randint(1, 3)):
            if touched and rng.random() < overlap / 2:  # each of ~2 edits: ~overlap of branches collide
                edits.append(rng.choice(touched))
            else:
                f = fresh.pop() if fresh else rng.randrange(files)
                edits.append((f, rng.randrange(LINES_PER_FILE)))
        edits = list(dict.fromkeys(edits))
        touched += edits
        n_commits = min(len(edits), 1 + (rng.random() < multi_commit) + (rng.random() < multi_commit / 3))
        contents: dict[int, list[bytes]] = {}
        parent = ":1"
        for c in range(n_commits):
            out += f"commit refs/heads/{name}\nmark :{mark}\n".encode()
            out += f"author Agent {b} <task-{b}@swarm.local> {1700000100 + b} +0000\n".encode()
            out += f"committer {_IDENT} {1700000100 + b} +0000\n".encode()
            out += _data(f"task {b}: change {c + 1} of {n_commits}\n".encode())
            out += f"from {parent}\n".encode()
            for f, line in edits[c::n_commits]:
                lines = contents.setdefault(f, _content(f))
                lines[line] = f"export const v{f}_{line} = 'task {b}';\n".encode()
                out += f"M 100644 inline {file_path(f)}\n".encode() + _data(b"".join(lines))
            out += b"\n"
            parent, mark = f":{mark}", mark + 1
        names.append(name)
        changes[name] = {file_path(f): b"".join(lines) for f, lines in contents.items()}
    proc = gitrepo.open_repo(path).run("fast-import", "--quiet", input=bytes(out))
    if proc.returncode != 0:
        raise RuntimeError(f"git fast-import failed: {proc.stderr}")
    return Synthetic(path, names, changes)


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class Ours:
    """land_branch on one copy, timing each call and counting the git processes it starts."""

    def __init__(self, repo: Path, strategy: MergeStrategy):
        self.repo, self.strategy = repo, strategy
        self.counts = {"merged": 0, "conflict": 0, "already_merged": 0, "failed": 0}
        self.durations: list[float] = []
        self.git_calls = 0

    def step(self, name: str) -> None:
        real_call = gitrepo.SafeGit.call  # every git command the layer runs to completion starts there

        def counting_call(git_self, *args, **kw):
            self.git_calls += 1
            return real_call(git_self, *args, **kw)

        gitrepo.SafeGit.call = counting_call  # type: ignore[method-assign]
        try:
            t = time.perf_counter()
            r = land_branch(str(self.repo), name, self.strategy)
            self.durations.append((time.perf_counter() - t) * 1000)
        finally:
            gitrepo.SafeGit.call = real_call  # type: ignore[method-assign]
        self.counts[r.status] += 1


class Baseline:
    """The floor: merge-tree, commit-tree, update-ref per branch, conflicts skipped, nothing else."""

    def __init__(self, repo: Path):
        self.git = ["git", f"--git-dir={repo}"]
        self.env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
                    "GIT_COMMITTER_EMAIL": "b@b", "PATH": "/usr/bin:/bin:/usr/local/bin"}
        self.heads = dict(line.split() for line in subprocess.run(
            [*self.git, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/"],
            capture_output=True, text=True, check=True).stdout.splitlines())
        self.main, self.merged, self.conflicts, self.elapsed = self.heads["main"], 0, 0, 0.0

    def step(self, name: str) -> None:
        t = time.perf_counter()
        mt = subprocess.run([*self.git, "merge-tree", "--write-tree", self.main, self.heads[name]],
                            capture_output=True, text=True)
        if mt.returncode == 1:
            self.conflicts += 1
        else:
            tree = mt.stdout.split("\n", 1)[0]
            new = subprocess.run([*self.git, "commit-tree", tree, "-p", self.main, "-p", self.heads[name],
                                  "-m", f"Merge {name}"], capture_output=True, text=True, env=self.env,
                                 check=True).stdout.strip()
            subprocess.run([*self.git, "update-ref", "refs/heads/main", new, self.main], check=True,
                           capture_output=True)
            self.main, self.merged = new, self.merged + 1
        self.elapsed += time.perf_counter() - t


def run(files: int, branches: int, strategy: MergeStrategy, seed: int,
        workdir: Path, log: Callable[[str], None] = lambda _: None) -> dict:
    """Build, copy, land with both loops; the JSON-ready figures."""
    t = time.perf_counter()
    syn = build_repo(workdir / "hub.git", files, branches, seed)
    base_copy = workdir / "baseline.git"
    shutil.copytree(syn.path, base_copy, symlinks=True)
    log(f"built {files} files, {branches} branches in {time.perf_counter() - t:.2f}s")
    ours, base = Ours(syn.path, strategy), Baseline(base_copy)
    for i, name in enumerate(syn.branches):  # interleaved, so load from other processes hits both alike
        first, second = (ours, base) if i % 2 == 0 else (base, ours)
        first.step(name)
        second.step(name)
    elapsed = sum(ours.durations) / 1000
    rate = ours.counts["merged"] / elapsed if elapsed else 0.0
    base_rate = base.merged / base.elapsed if base.elapsed else 0.0
    return {
        "strategy": strategy.value, "files": files, "branches": branches, "seed": seed,
        "merged": ours.counts["merged"], "conflicts": ours.counts["conflict"],
        "already_merged": ours.counts["already_merged"], "failed": ours.counts["failed"],
        "merges_per_s": round(rate, 2), "attempts_per_s": round(branches / elapsed, 2) if elapsed else 0.0,
        "p50_ms": round(_percentile(ours.durations, 50), 2), "p95_ms": round(_percentile(ours.durations, 95), 2),
        "git_calls_per_merge": round(ours.git_calls / branches, 2),
        "baseline_merges_per_s": round(base_rate, 2), "baseline_merged": base.merged,
        "baseline_conflicts": base.conflicts, "ratio": round(rate / base_rate, 3) if base_rate else None,
        "git_version": ".".join(map(str, gitrepo.git_version())),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the benchmark in a temporary directory, print one JSON line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--branches", type=int, default=500)
    p.add_argument("--strategy", choices=[s.value for s in MergeStrategy], default="fast-forward")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    if args.files < 3 or args.branches < 1:
        p.error("--files must be at least 3 and --branches at least 1")
    gitrepo.require_git()
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as tmp:
        figures = run(args.files, args.branches, MergeStrategy(args.strategy), args.seed, Path(tmp),
                      log=(lambda m: print(m, file=sys.stderr)) if args.verbose else (lambda _: None))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
