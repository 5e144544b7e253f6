"""The layer's handles and ref helpers against real repositories: opening, version parsing, mirror fetch and push."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentswarm.git import refs
from agentswarm.git import repo as gitrepo
from agentswarm.git.landing import land_branch
from agentswarm.git.repo import GitError
from tests.git.hubkit import branch, git, new_hub


def test_installed_git_is_new_enough_and_parsed():
    version = gitrepo.git_version()
    assert len(version) == 3 and gitrepo.require_git() == version and version[:2] >= gitrepo.MIN_GIT_VERSION


def test_a_clone_with_a_working_tree_opens_at_its_git_dir(tmp_path):
    hub, _ = new_hub(tmp_path / "hub.git", {"a": "1\n"})
    subprocess.run(["git", "clone", "-q", str(hub), str(tmp_path / "clone")], check=True)
    repo = gitrepo.open_repo(tmp_path / "clone")
    assert Path(repo.git_dir) == (tmp_path / "clone" / ".git").resolve()
    assert refs.rev_parse(repo, "refs/heads/main") == refs.rev_parse(hub, "refs/heads/main")
    with pytest.raises(GitError, match="not a git repository"):
        gitrepo.open_repo(tmp_path)


@pytest.mark.parametrize("bad", ["-rf", "a b", "x..y", "x.lock", "x/", "@{0}", "a\\b"])
def test_bad_branch_names_are_refused(bad):
    with pytest.raises(ValueError, match="branch name"):
        refs.branch_ref(bad)


def test_mirror_fetches_branch_and_main_merges_and_pushes_main_back(tmp_path):
    remote, root = new_hub(tmp_path / "remote.git", {"a": "1\n"})
    tip = branch(remote, "swarm/t1", root, {"b": "2\n"})[-1]
    mirror = gitrepo.init_bare(tmp_path / "mirror.git")
    git(mirror, "remote", "add", "origin", str(remote))
    refs.fetch_refs(mirror, "origin", ["refs/heads/swarm/t1", "refs/heads/main"])
    assert refs.list_branches(mirror) == {"refs/heads/swarm/t1": tip}
    r = land_branch(mirror, "swarm/t1", "merge-commit")
    assert r.status == "merged"
    refs.push_ref(mirror, "origin", "refs/heads/main")
    assert refs.rev_parse(remote, "refs/heads/main") == r.main_after
    assert refs.is_ancestor(remote, root, r.main_after) and not refs.is_ancestor(remote, r.main_after, root)
    with pytest.raises(GitError, match="fetch"):
        refs.fetch_refs(mirror, "origin", ["refs/heads/swarm/missing"])
