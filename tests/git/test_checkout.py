"""The reconciler's scratch checkout of main, through the git layer, against a real hub."""

import subprocess
from pathlib import Path

import pytest

from agentswarm.git.checkout import checkout_main
from agentswarm.git.repo import GitError


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_hub(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text)
    git("init", "-q", "-b", "main", cwd=src)
    git("add", ".", cwd=src)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=src)
    hub = tmp_path / "hub.git"
    git("clone", "-q", "--bare", str(src), str(hub), cwd=tmp_path)
    return hub


def test_checkout_follows_main_and_cleans(tmp_path):
    hub = make_hub(tmp_path, {"a.txt": "one\n", "package-lock.json": "{}"})
    work = tmp_path / "work"
    sha1 = checkout_main(str(hub), work)
    (work / "junk.txt").write_text("left over")
    (work / "node_modules").mkdir()
    (work / "node_modules" / "keep").write_text("x")
    clone = tmp_path / "clone"
    git("clone", "-q", str(hub), str(clone), cwd=tmp_path)
    (clone / "a.txt").write_text("two\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "second", cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    sha2 = checkout_main(str(hub), work)
    assert sha2 != sha1 and (work / "a.txt").read_text() == "two\n"
    assert not (work / "junk.txt").exists() and (work / "node_modules" / "keep").exists()


def test_checkout_runs_no_hook_of_the_scratch_clone(tmp_path):
    hub = make_hub(tmp_path, {"a.txt": "one\n"})
    work = tmp_path / "work"
    checkout_main(str(hub), work)
    marker = tmp_path / "hook-ran"
    hook = work / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    checkout_main(str(hub), work)
    assert not marker.exists()


def test_checkout_of_a_missing_hub_fails_with_git_error(tmp_path):
    with pytest.raises(GitError, match="clone"):
        checkout_main(str(tmp_path / "nope.git"), tmp_path / "work")
