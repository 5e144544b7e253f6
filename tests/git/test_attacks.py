"""Attacks on the git layer, with real git and real repositories: planted hooks, leaked secrets, nested paths."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from agentswarm.git import refs
from agentswarm.git.hub import HubTampered, create_hub, install_hooks, main_sha
from agentswarm.git.intake import clone_for_sandbox
from agentswarm.git.landing import MergeStrategy, land_branch
from agentswarm.git.repo import GitError, open_repo, run_git
from agentswarm.planning.repo_state import read_main
from tests.git.hubkit import branch, git, set_ref

SECRETS = {"DATABASE_URL": "postgresql://swarm:pg-secret-41@db/swarm", "REDIS_URL": "redis://:redis-secret-42@r/0",
           "LLM_API_KEY": "sk-llm-secret-43", "GIT_TOKEN": "ghp_token_secret_44", "AWS_SECRET_ACCESS_KEY": "aws-45"}
PLANTED = ("reference-transaction", "post-update", "update", "post-receive", "pre-auto-gc", "post-checkout")
AGENT_ENV = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@a", "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@a"}


def agent_git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """An agent's own git, outside the layer (as in the sandbox)."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **AGENT_ENV})


def plant(hooks: Path, marker: Path, names=PLANTED) -> None:
    hooks.mkdir(parents=True, exist_ok=True)
    for name in names:
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\necho {name} >> {marker}\nenv >> {marker}.env\nexit 0\n")
        hook.chmod(0o755)


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("".join(f"a {i}\n" for i in range(20)))
    (src / "b.txt").write_text("".join(f"b {i}\n" for i in range(20)))
    path = tmp_path / "hub.git"
    create_hub(path, src)
    return path


def test_planted_hooks_never_run_for_the_merge_queue_or_the_hub_helpers(hub: Path, tmp_path: Path):
    root = main_sha(hub)
    for i, _ in enumerate(MergeStrategy):  # test setup (plain git) before any hook is planted
        branch(hub, f"swarm/t{i}", root, {f"new{i}.txt": f"{i}\n"})
    git(hub, "remote", "add", "self", str(hub))
    marker = tmp_path / "hook-ran"
    plant(hub / "hooks", marker)
    # the hub's own pre-receive keeps refusing main, and now also records that it ran
    pre = hub / "hooks" / "pre-receive"
    pre.write_text(pre.read_text().replace("#!/bin/sh\n", f"#!/bin/sh\necho pre-receive >> {marker}\n", 1))
    for i, strategy in enumerate(MergeStrategy):
        r = land_branch(hub, f"swarm/t{i}", strategy)
        assert r.status == "merged", r.error
    assert refs.update_ref_cas(hub, "refs/heads/swarm/cas", root, None)
    assert refs.delete_branch(hub, "swarm/cas", expected_sha=root)
    refs.write_commit_graph(hub, [main_sha(hub)])
    refs.gc_auto(hub)
    with pytest.raises(HubTampered):  # start-up on a hub with planted hooks refuses, and runs none of them
        create_hub(hub, tmp_path / "src")
    install_hooks(hub)  # re-installs the real pre-receive, moves nothing
    pre.write_text(pre.read_text().replace("#!/bin/sh\n", f"#!/bin/sh\necho pre-receive >> {marker}\n", 1))
    refs.fetch_refs(hub, "self", ["refs/heads/main"])
    clone_for_sandbox(hub, tmp_path / "work")  # a sandbox's repository, prepared by the orchestrator
    plant(tmp_path / "work" / ".git" / "hooks", marker)
    open_repo(tmp_path / "work").out("checkout", "--quiet", "--detach", "main")  # post-checkout never runs
    assert not marker.exists(), marker.read_text()

    # Agents push with their own git: the hub's pre-receive still refuses main, the planted hooks are live.
    clone = tmp_path / "agent"
    assert agent_git("clone", "-q", str(hub), str(clone)).returncode == 0
    (clone / "x.txt").write_text("agent\n")
    agent_git("add", "x.txt", cwd=clone)
    agent_git("commit", "-qm", "agent work", cwd=clone)
    before = main_sha(hub)
    refused = agent_git("push", "origin", "HEAD:main", cwd=clone)
    assert refused.returncode != 0 and "main is updated only by the merge queue" in refused.stderr
    assert main_sha(hub) == before
    assert agent_git("push", "origin", "HEAD:refs/heads/swarm/agent", cwd=clone).returncode == 0
    ran = marker.read_text().split()
    assert "pre-receive" in ran and "reference-transaction" in ran and "post-update" in ran


def test_a_hooks_path_configured_in_the_hub_is_overridden_for_the_layer(hub: Path, tmp_path: Path):
    marker = tmp_path / "hook-ran"
    plant(tmp_path / "evil-hooks", marker)
    branch(hub, "swarm/h", main_sha(hub), {"h.txt": "h\n"})
    git(hub, "config", "core.hooksPath", str(tmp_path / "evil-hooks"))
    assert land_branch(hub, "swarm/h", "rebase").status == "merged"
    assert not marker.exists()
    install_hooks(hub)  # removes the override so agents' pushes meet pre-receive again
    assert subprocess.run(["git", f"--git-dir={hub}", "config", "core.hooksPath"]).returncode == 1


def test_secrets_in_the_environment_never_reach_git(hub: Path, tmp_path: Path, monkeypatch):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere.git"))  # and no redirection either
    monkeypatch.setenv("GIT_WORK_TREE", str(tmp_path))
    alias = ("-c", "alias.showenv=!env")
    seen = open_repo(hub).run(*alias, "showenv")
    assert seen.returncode == 0, seen.stderr
    env = dict(line.split("=", 1) for line in seen.stdout.decode().splitlines() if "=" in line)
    assert not set(SECRETS) & set(env) and not any(v in seen.stdout.decode() for v in SECRETS.values())
    assert env["GIT_DIR"] == str(hub) and "GIT_WORK_TREE" not in env
    assert env["GIT_CONFIG_KEY_0"] == "core.hooksPath" and env["GIT_CONFIG_VALUE_0"] == "/dev/null"
    assert env["PATH"].endswith(os.environ["PATH"]) and env["LC_ALL"] == "C" and env["GIT_TERMINAL_PROMPT"] == "0"
    unbound = run_git(*alias, "showenv", cwd=tmp_path).stdout.decode()
    assert not any(v in unbound for v in SECRETS.values()) and "GIT_DIR=" not in unbound
    assert open_repo(hub).git.var("GIT_EDITOR", env={"EDITOR": "vi"}) == "vi"  # explicit extras do pass
    assert main_sha(hub) == git(hub, "rev-parse", "main")  # GIT_DIR in os.environ was ignored

    # A hook run through the layer sees the same environment: enable one on purpose with a test-only
    # `-c core.hooksPath` (only an explicit -c in the argument list outranks the layer's setting).
    marker = tmp_path / "m"
    plant(tmp_path / "test-hooks", marker, ["reference-transaction"])
    r = open_repo(hub).run("-c", f"core.hooksPath={tmp_path / 'test-hooks'}", "update-ref", "refs/heads/swarm/z",
                           main_sha(hub))
    assert r.returncode == 0 and "reference-transaction" in marker.read_text()
    hook_env = Path(f"{marker}.env").read_text()
    assert f"GIT_DIR={hub}" in hook_env and not any(v in hook_env for v in SECRETS.values())
    assert not any(f"{k}=" in hook_env for k in SECRETS)


def test_a_path_inside_another_repository_is_refused_not_resolved_upwards(tmp_path: Path):
    outer = tmp_path / "outer"
    subprocess.run(["git", "init", "-q", "-b", "main", str(outer)], check=True)
    (outer / "f").write_text("x\n")
    agent_git("add", "f", cwd=outer)
    agent_git("commit", "-qm", "outer", cwd=outer)
    assert agent_git("rev-parse", "main", cwd=outer).returncode == 0
    sub = outer / "sub" / "deeper"
    sub.mkdir(parents=True)
    for path in (outer / "sub", sub):
        with pytest.raises(GitError, match="is not a git repository"):
            open_repo(path)
        with pytest.raises(GitError, match="is not a git repository"):
            refs.rev_parse(path, "main")
        assert main_sha(path) is None and read_main(path).sha is None
        r = land_branch(path, "swarm/x", "merge-commit")
        assert r.status == "failed" and "is not a git repository" in r.error
    bare_inside = open_repo(open_repo(outer).git_dir)  # the outer's own .git opens as itself
    assert Path(bare_inside.git_dir) == (outer / ".git").resolve()


def test_handles_are_shared_and_thread_safe(hub: Path):
    results, errors = [], []

    def read():
        try:
            for _ in range(5):
                results.append((id(open_repo(hub)), main_sha(hub)))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 40 and len(set(results)) == 1
    # GitPython's own object reading works through the same confined handle (persistent cat-file)
    assert open_repo(hub).commit("main").hexsha == results[0][1]


def test_failures_raise_the_layers_error_type(hub: Path):
    with pytest.raises(GitError):
        open_repo(hub).git.rev_parse("--verify", "refs/heads/nope")
    with pytest.raises(GitError, match="argument lists only"):
        open_repo(hub).git.execute("git status", shell=True)
    status, out, err = open_repo(hub).git.merge_tree("--write-tree", "main", "main", with_extended_output=True,
                                                    with_exceptions=False)
    assert status == 0 and out == git(hub, "rev-parse", "main^{tree}") and err == ""
    set_ref(hub, "swarm/s", main_sha(hub))
    assert refs.list_branches(hub) == {"refs/heads/swarm/s": main_sha(hub)}
