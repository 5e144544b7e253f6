"""Reading main from the hub without a worktree."""

from __future__ import annotations

import subprocess

from agentswarm.planning.repo_state import read_main


def test_tree_and_log_of_main_are_read_and_capped(hub):
    state = read_main(hub, tree_cap=2)
    sha = subprocess.run(["git", "--git-dir", str(hub), "rev-parse", "main"], capture_output=True, text=True)
    assert state.sha == sha.stdout.strip()
    assert state.total_files == 4 and state.files == ["README.md", "package.json"]
    assert state.file_tree().endswith("... and 2 more files")
    assert len(state.commits) == 1 and "Initial import" in state.recent_commits()


def test_a_missing_hub_or_an_empty_one_reads_as_empty(tmp_path):
    assert read_main(tmp_path / "nope").sha is None
    subprocess.run(["git", "init", "--bare", "-q", str(tmp_path / "empty.git")], check=True)
    state = read_main(tmp_path / "empty.git")
    assert state.sha is None and state.file_tree() == "(no files on main yet)"
