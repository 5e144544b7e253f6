"""The hub: a bare repository whose main only the merge queue moves (real git, real pushes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agentswarm.git.hub import create_hub, ensure_hub, hub_url, install_hooks, main_sha

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}")
    return proc


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "target-repo"
    (src / "src").mkdir(parents=True)
    (src / "src" / "main.ts").write_text("export const x = 1;\n")
    (src / "SPEC.md").write_text("# spec\n")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "link.md").symlink_to("SPEC.md")
    for junk in ("node_modules/pkg", "dist", "src/node_modules", ".git"):
        (src / junk).mkdir(parents=True, exist_ok=True)
        (src / junk / "junk.js").write_text("junk\n")
    return src


@pytest.fixture
def hub(tmp_path: Path, source: Path) -> Path:
    path = tmp_path / "hub.git"
    create_hub(path, source)
    return path


def test_create_hub_commits_the_source_without_build_output(hub: Path, source: Path) -> None:
    sha = main_sha(hub)
    assert sha and git("--git-dir", str(hub), "rev-parse", "--is-bare-repository").stdout.strip() == "true"
    listing = git("--git-dir", str(hub), "ls-tree", "-r", "main").stdout
    files = {line.split("\t")[1]: line.split()[0] for line in listing.splitlines()}
    assert files == {"SPEC.md": "100644", "link.md": "120000", "run.sh": "100755", "src/main.ts": "100644"}
    assert git("--git-dir", str(hub), "show", "main:src/main.ts").stdout == "export const x = 1;\n"


def test_create_hub_is_idempotent(hub: Path, source: Path) -> None:
    before = main_sha(hub)
    (source / "new.txt").write_text("later\n")
    assert create_hub(hub, source) == before
    assert "new.txt" not in git("--git-dir", str(hub), "ls-tree", "-r", "--name-only", "main").stdout


def test_pushes_to_main_or_outside_swarm_are_refused(hub: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git("clone", "-q", str(hub), str(clone))
    (clone / "feature.txt").write_text("agent work\n")
    git("add", "feature.txt", cwd=clone)
    git("commit", "-q", "-m", "agent work", cwd=clone)
    before = main_sha(hub)

    to_main = git("push", "origin", "HEAD:main", cwd=clone, check=False)
    assert to_main.returncode != 0
    assert "main is updated only by the merge queue" in to_main.stderr
    other = git("push", "origin", "HEAD:refs/heads/feature/x", cwd=clone, check=False)
    assert other.returncode != 0 and "only swarm/<task-id> branches" in other.stderr
    tag = git("push", "origin", "HEAD:refs/tags/v1", cwd=clone, check=False)
    assert tag.returncode != 0
    bare_prefix = git("push", "origin", "HEAD:refs/heads/swarm/", cwd=clone, check=False)
    assert bare_prefix.returncode != 0
    assert main_sha(hub) == before

    ok = git("push", "origin", "HEAD:refs/heads/swarm/x", cwd=clone, check=False)
    assert ok.returncode == 0, ok.stderr
    branch = git("--git-dir", str(hub), "rev-parse", "refs/heads/swarm/x").stdout.strip()
    assert branch == git("rev-parse", "HEAD", cwd=clone).stdout.strip()

    # The merge queue moves main on the hub itself, with a compare-and-swap that runs no hook.
    git("--git-dir", str(hub), "update-ref", "refs/heads/main", branch, before)
    assert main_sha(hub) == branch


def test_hooks_survive_a_hooks_path_override(hub: Path, tmp_path: Path) -> None:
    git("--git-dir", str(hub), "config", "core.hooksPath", str(tmp_path / "nowhere"))
    install_hooks(hub)
    clone = tmp_path / "c2"
    git("clone", "-q", str(hub), str(clone))
    git("commit", "-q", "--allow-empty", "-m", "x", cwd=clone)
    assert git("push", "origin", "HEAD:main", cwd=clone, check=False).returncode != 0


def test_hub_url_prefers_git_repo_url(tmp_path: Path, source: Path) -> None:
    assert hub_url("https://example.com/x.git ", tmp_path / "h") == "https://example.com/x.git"
    assert hub_url(None, tmp_path / "h") == str((tmp_path / "h").resolve())
    assert ensure_hub("https://example.com/x.git", tmp_path / "h", source) == "https://example.com/x.git"
    assert not (tmp_path / "h").exists()
    assert ensure_hub("", tmp_path / "h", source) == str((tmp_path / "h").resolve())
    assert main_sha(tmp_path / "h")


def test_an_agent_cannot_delete_a_swarm_branch_but_may_replace_its_own_attempt(hub: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone-del"
    git("clone", "-q", str(hub), str(clone))
    (clone / "a.txt").write_text("one\n")
    git("add", "a.txt", cwd=clone)
    git("commit", "-q", "-m", "one", cwd=clone)
    git("push", "-q", "origin", "HEAD:refs/heads/swarm/t1", cwd=clone)
    gone = git("push", "origin", ":refs/heads/swarm/t1", cwd=clone, check=False)
    assert gone.returncode != 0 and "removed only by the merge queue" in gone.stderr
    assert git("--git-dir", str(hub), "rev-parse", "--verify", "-q", "refs/heads/swarm/t1", check=False).returncode == 0
    git("commit", "-q", "--amend", "-m", "one, second attempt", cwd=clone)  # a retry rewrites its branch
    assert git("push", "-q", "--force", "origin", "HEAD:refs/heads/swarm/t1", cwd=clone, check=False).returncode == 0


def test_planted_hooks_stop_start_up_and_the_monitor_removes_them(hub: Path, source: Path) -> None:
    from agentswarm.git.hub import HubTampered, foreign_hooks, repair_hooks

    assert foreign_hooks(hub) == []  # a fresh hub: our pre-receive and git's samples only
    planted = hub / "hooks" / "post-receive"
    planted.write_text("#!/bin/sh\nenv > /tmp/stolen\n")
    planted.chmod(0o755)
    (hub / "hooks" / "pre-receive").write_text("#!/bin/sh\nexit 0\n")  # neutered protection
    git("--git-dir", str(hub), "config", "core.hooksPath", str(hub / "elsewhere"))
    found = foreign_hooks(hub)
    assert "hooks/post-receive" in found and any(f.startswith("core.hooksPath=") for f in found)
    with pytest.raises(HubTampered, match="hooks/post-receive"):
        create_hub(hub, source)  # start-up refuses a tampered hub and says what to look at
    assert sorted(repair_hooks(hub)) == sorted(found)
    assert foreign_hooks(hub) == [] and not planted.exists()
    assert "refusing push" in (hub / "hooks" / "pre-receive").read_text()  # protection restored
    assert create_hub(hub, source) == main_sha(hub)
