"""Git in the sandbox: measuring from git, pushing only the task's branch, the token kept out of config."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from agentswarm.agent.gitwork import Git, GitError, write_askpass
from tests.agent.conftest import SECRET_TOKEN, git


@pytest.fixture
def clone(tmp_path: Path, hub) -> Git:
    g = Git(tmp_path / "repo", token=SECRET_TOKEN, scratch=tmp_path)
    g.clone(str(hub.path))
    g.configure_identity()
    g.checkout_branch("swarm/t9", hub.base)
    return g


def test_measure_matches_numstat_including_binary_and_deleted_files(clone: Git, hub) -> None:
    repo = clone.repo
    (repo / "src" / "index.ts").write_text("export const answer = 42;\nexport const more = 1;\n")
    (repo / "README.md").unlink()
    (repo / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (repo / "dir with space").mkdir()
    (repo / "dir with space" / "x.txt").write_text("a\nb\n")
    sha = clone.commit_all("change things")
    assert sha and clone.commit_all("nothing") is None
    m = clone.measure(hub.base)
    clone.push_branch("swarm/t9")
    stats = git(hub.path, "diff", "--numstat", f"{hub.base}..{m.head_sha}").splitlines()
    rows = [s.split("\t") for s in stats]
    assert m.files_changed == [r[2] for r in rows]
    assert m.insertions == sum(int(r[0]) for r in rows if r[0] != "-") == 4
    assert m.deletions == sum(int(r[1]) for r in rows if r[1] != "-") == 5
    assert m.commits == [sha] and hub.branch_sha("swarm/t9") == sha


def test_token_never_lands_in_git_config_and_askpass_reads_it_from_env(clone: Git, tmp_path: Path) -> None:
    assert SECRET_TOKEN not in (clone.repo / ".git" / "config").read_text()
    script = write_askpass(tmp_path / "x") if (tmp_path / "x").mkdir() is None else None
    assert SECRET_TOKEN not in script.read_text()
    env = {"PATH": os.environ["PATH"], "GIT_TOKEN": SECRET_TOKEN}
    ask = lambda prompt: subprocess.run([str(script), prompt], env=env, capture_output=True, text=True).stdout  # noqa: E731
    assert ask("Username for 'https://github.com': ") == "x-access-token\n"
    assert ask("Password for 'https://x-access-token@github.com': ") == SECRET_TOKEN + "\n"


def test_errors_are_scrubbed_of_the_token(tmp_path: Path) -> None:
    g = Git(tmp_path / "r", token=SECRET_TOKEN, scratch=tmp_path)
    with pytest.raises(GitError) as info:
        g.clone(f"{tmp_path}/missing-{SECRET_TOKEN}.git")
    assert SECRET_TOKEN not in str(info.value) and "***" in str(info.value)


def test_planted_config_and_hooks_do_not_run_at_harvest(clone: Git, tmp_path: Path, hub) -> None:
    marker = tmp_path / "hook-ran"
    hook = clone.repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\necho $GIT_TOKEN > {marker}\n")
    hook.chmod(0o755)
    subprocess.run(["git", "config", "remote.origin.url", str(tmp_path / "evil.git")], cwd=clone.repo, check=True)
    clone.reset_config(str(hub.path))
    (clone.repo / "NOTES.md").write_text("x\n")
    clone.commit_all("notes")
    clone.push_branch("swarm/t9")
    assert not marker.exists() and hub.branch_sha("swarm/t9") == clone.out("rev-parse", "HEAD")


def test_the_hub_still_refuses_main_from_a_runner_clone(clone: Git, hub) -> None:
    (clone.repo / "NOTES.md").write_text("x\n")
    clone.commit_all("notes")
    with pytest.raises(GitError, match="refusing push"):
        clone.push_branch("main")
    assert hub.branch_sha("main") == hub.base


def test_missing_base_commit_is_an_error(clone: Git) -> None:
    with pytest.raises(GitError, match="not in the repository"):
        clone.checkout_branch("swarm/t9", "0" * 40)


def test_history_since_the_base_and_whether_the_base_is_still_in_it(clone: Git, hub) -> None:
    (clone.repo / "a.txt").write_text("a\n")
    first = clone.commit_all("first")
    (clone.repo / "b.txt").write_text("b\n")
    second = clone.commit_all("second")
    assert first and second and clone.commits_since(hub.base, second) == [first, second]
    assert clone.commits_since(hub.base, hub.base) == []
    assert clone.commits_since(second, first) is None  # head behind the base
    orphan = clone.out("commit-tree", clone.out("rev-parse", "HEAD^{tree}"), "-m", "rewritten")
    assert clone.commits_since(hub.base, orphan) is None  # history rewritten: the base is gone
    merged = clone.out("commit-tree", clone.out("rev-parse", "HEAD^{tree}"), "-p", orphan, "-p", first, "-m", "m")
    since = clone.commits_since(hub.base, merged)  # the base is reached through one parent: still an ancestor
    assert since is not None and set(since) == {orphan, first, merged} and since[-1] == merged


def test_the_config_is_written_whole_and_a_url_cannot_add_keys(tmp_path: Path, hub) -> None:
    g = Git(tmp_path / "repo")
    g.clone(str(hub.path))
    evil = f'{hub.path}"\n[core]\n\thooksPath = /tmp/evil\n'
    config = g.repo / ".git" / "config"
    config.unlink()
    config.symlink_to(tmp_path / "outside")  # planted by the agent: replaced, never written through
    g.reset_config(evil)
    assert g("config", "--get", "remote.origin.url").stdout == evil + "\n"  # one value, newlines and all
    assert g("config", "--file", str(config), "--get-regexp", "hookspath", check=False).returncode == 1
    assert g.out("config", "user.name") == "AgentSwarm Worker"
    assert not config.is_symlink() and not (tmp_path / "outside").exists()


def test_a_clone_that_fails_is_retried_within_the_attempt(tmp_path: Path, hub) -> None:
    late = tmp_path / "late.git"
    threading.Timer(0.3, lambda: shutil.copytree(hub.path, late)).start()  # the hub is not there at the first try
    g = Git(tmp_path / "repo")
    g.clone(str(late), pause_s=0.4)
    assert g.out("rev-parse", "origin/main") == hub.base
    with pytest.raises(GitError, match="clone"):
        Git(tmp_path / "repo2").clone(str(tmp_path / "never.git"), attempts=2, pause_s=0.01)
    assert not (tmp_path / "repo2").exists()


def test_a_local_hub_is_cloned_through_upload_pack_not_by_copying_its_objects(tmp_path: Path, hub) -> None:
    g = Git(tmp_path / "repo")
    g.clone(str(hub.path))
    hub_objects = {p.stat().st_ino for p in (hub.path / "objects").rglob("*") if p.is_file()}
    mine = [p for p in (g.repo / ".git" / "objects").rglob("*") if p.is_file()]
    assert mine and not hub_objects & {p.stat().st_ino for p in mine}  # no hard link into the hub
    assert not (g.repo / ".git" / "objects" / "info" / "alternates").exists()



def test_history_reads_the_commits_and_the_head_sha_in_one_process(clone: Git, hub) -> None:
    """history(base) == (commits_since(base, HEAD), HEAD); rev-parse only when nothing is past the base."""
    assert clone.history(hub.base) == ([], hub.base)
    (clone.repo / "a.txt").write_text("a\n")
    first = clone.commit_all("first")
    (clone.repo / "b.txt").write_text("b\n")
    assert clone.commit_all("second", read_head=False) == "HEAD"
    second = clone.out("rev-parse", "HEAD")
    assert clone.history(hub.base) == ([first, second], second)
    tree = clone.out("rev-parse", "HEAD^{tree}")
    orphan = clone.out("commit-tree", tree, "-m", "rewritten")
    merged = clone.out("commit-tree", tree, "-p", orphan, "-p", first, "-m", "m")
    for head in (orphan, merged, first):
        clone("reset", "--quiet", "--hard", head)
        assert clone.history(hub.base) == (clone.commits_since(hub.base, head), head)
    assert clone.history(second) == (None, first)  # head behind the base: nothing listed, rev-parse says where
