"""The merge-queue benchmark at a small size: one JSON line whose figures add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import merge_queue
from tests.git.hubkit import git, rev_list

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"merges_per_s", "merged", "conflicts", "already_merged", "p50_ms", "p95_ms",
          "baseline_merges_per_s", "ratio", "strategy", "files", "branches", "seed", "git_calls_per_merge"}


def check(figures: dict, strategy: str, branches: int) -> None:
    assert FIELDS <= set(figures)
    assert (figures["strategy"], figures["branches"], figures["failed"]) == (strategy, branches, 0)
    assert figures["merged"] + figures["conflicts"] + figures["already_merged"] == branches
    assert figures["merged"] > 0 and figures["merges_per_s"] > 0 and figures["baseline_merges_per_s"] > 0
    assert 0 < figures["p50_ms"] <= figures["p95_ms"]
    assert figures["ratio"] == pytest.approx(figures["merges_per_s"] / figures["baseline_merges_per_s"], rel=0.02)
    assert figures["baseline_merged"] + figures["baseline_conflicts"] == branches
    assert 3 <= figures["git_calls_per_merge"] < 10


def test_small_benchmark_in_process(capsys):
    assert merge_queue.main(["--files", "50", "--branches", "20", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    check(json.loads(lines[0]), "fast-forward", 20)


def test_benchmark_script_with_a_strategy_flag():
    proc = subprocess.run([sys.executable, "bench/merge_queue.py", "--files", "60", "--branches", "25",
                           "--strategy", "merge-commit"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check(json.loads(proc.stdout), "merge-commit", 25)


def test_synthetic_repo_has_the_promised_shape(tmp_path):
    syn = merge_queue.build_repo(tmp_path / "h.git", files=200, branches=60, seed=5)
    assert len(git(syn.path, "ls-tree", "-r", "--name-only", "main").split()) == 200
    root = rev_list(syn.path, "main")
    assert len(root) == 1 and len(syn.branches) == 60
    sizes = [len(rev_list(syn.path, f"main..{b}")) for b in syn.branches]
    touched = [len(c) for c in syn.changes.values()]
    assert set(sizes) <= {1, 2, 3} and max(sizes) > 1 and set(touched) <= {1, 2, 3}
    all_paths = [p for c in syn.changes.values() for p in c]
    assert len(all_paths) > len(set(all_paths))  # some branches touch the same file: conflicts happen


def test_bad_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        merge_queue.main(["--branches", "0"])
    assert "--branches" in capsys.readouterr().err


def test_compare_against_another_revision_runs_both_in_one_process():
    """bench/compare_merge_queue.py: this checkout against HEAD's, alternated, one JSON line."""
    proc = subprocess.run([sys.executable, "bench/compare_merge_queue.py", "--against", "HEAD", "--rounds", "2",
                           "--strategy", "rebase", "--files", "40", "--branches", "12"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    rebase = report["rebase"]
    assert len(rebase["runs"]["before"]) == len(rebase["runs"]["after"]) == 2
    for figures in rebase["runs"]["after"]:  # this checkout's own benchmark
        check(figures, "rebase", 12)
    for figures in rebase["runs"]["before"]:  # HEAD's, which may predate a change to its figures
        assert figures["merged"] + figures["conflicts"] + figures["already_merged"] == 12
    assert rebase["ratio_change"] == pytest.approx(rebase["ratio_after"] / rebase["ratio_before"] - 1, abs=0.002)
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True).stdout
    assert "merge-bench-against-" not in worktrees  # the temporary checkout is gone
