"""Two merge workers (two OS processes, no lock) land the same branches in different orders."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.merge_queue import build_repo
from tests.git.hubkit import git, rev_list

ROOT = Path(__file__).resolve().parents[2]


def run_two_workers(tmp_path: Path, strategy: str, n: int) -> tuple[Path, dict, list[dict]]:
    syn = build_repo(tmp_path / "hub.git", files=3 * n + 10, branches=n, seed=n, overlap=0.0, multi_commit=0.3)
    git(syn.path, "config", "core.logAllRefUpdates", "always")  # a reflog of every move of main
    procs = []
    for w in (1, 2):
        order = list(syn.branches)
        random.Random(w).shuffle(order)
        (tmp_path / f"order{w}").write_text("\n".join(order))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.merge.merge_worker", str(syn.path), strategy,
             str(tmp_path / f"order{w}"), str(tmp_path / f"out{w}.jsonl")], cwd=ROOT, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    results = [json.loads(line) for w in (1, 2) for line in (tmp_path / f"out{w}.jsonl").read_text().splitlines()]
    return syn.path, syn.changes, results


def main_history(hub: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """main's first-parent chain (oldest first) and every (old, new) move of main from the reflog."""
    chain = rev_list(hub, "--first-parent", "--reverse", "refs/heads/main")
    moves = [tuple(line.split()[:2]) for line in (hub / "logs/refs/heads/main").read_text().splitlines()]
    return chain, moves


def tree_contents(hub: Path, paths: list[str]) -> dict[str, bytes | None]:
    """Each path's content on main, from one `cat-file --batch`."""
    out = subprocess.run(["git", f"--git-dir={hub}", "cat-file", "--batch"],
                         input="".join(f"refs/heads/main:{p}\n" for p in paths).encode(),
                         capture_output=True, check=True).stdout
    contents, pos = {}, 0
    for p in paths:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        if header[-1] == b"missing":
            contents[p], pos = None, header_end + 1
            continue
        size = int(header[2])
        contents[p] = out[header_end + 1:header_end + 1 + size]
        pos = header_end + 1 + size + 1
    return contents


@pytest.mark.parametrize("strategy,n", [("rebase", 200), ("fast-forward", 100), ("merge-commit", 100)])
def test_two_unlocked_workers_lose_nothing_and_main_only_moves_forward(tmp_path, strategy, n):
    hub, changes, results = run_two_workers(tmp_path, strategy, n)
    by_branch: dict[str, list[str]] = {}
    for r in results:
        by_branch.setdefault(r["branch"], []).append(r["status"])
    # every branch: landed exactly once over both workers, the other attempt saw it already there
    assert {b: s.count("merged") for b, s in by_branch.items()} == {b: 1 for b in changes}
    assert all(set(s) <= {"merged", "already_merged", "failed"} for s in by_branch.values())
    assert all(s[-1] in ("merged", "already_merged") for s in by_branch.values())
    lost_races = sum(r["attempts"] - 1 for r in results) + sum(r["status"] == "failed" for r in results)
    assert lost_races > 0  # the two workers really raced for main (typically 50-150 times here)

    # nothing lost: every branch's final content of every file it touched is on main
    wanted = {p: c for files in changes.values() for p, c in files.items()}
    assert tree_contents(hub, sorted(wanted)) == wanted

    # main only moved forward: each move's new value descends from the old one, on one first-parent chain
    chain, moves = main_history(hub)
    position = {sha: i for i, sha in enumerate(chain)}
    merged = [r for r in results if r["status"] == "merged"]
    assert len(moves) == len(merged) == n
    assert all(old in position and new in position and position[old] < position[new] for old, new in moves)
    assert [new for _, new in moves] == sorted((r["main_after"] for r in merged), key=position.__getitem__)
    seen = {r["main_before"] for r in results} | {r["main_after"] for r in results if r["main_after"]}
    assert seen <= set(position)

    merges = rev_list(hub, "--merges", "refs/heads/main")
    branch_commits = sum(len(r["commits_landed"]) for r in merged)
    if strategy == "merge-commit":
        assert len(merges) == n and len(rev_list(hub, "refs/heads/main")) == branch_commits + 1
    else:  # linear, and with rebase every commit of every branch kept (none was a merge)
        assert merges == [] and len(chain) == branch_commits + 1
        assert branch_commits > n  # some branches had several commits
