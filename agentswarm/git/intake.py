"""Work in and out of a sandbox without trusting it: a shared clone in, a bundle out, measured here.

Invariants: the orchestrator prepares the sandbox's repository (a clone that borrows the hub's
objects read-only through `alternates`), so the sandbox needs neither the network nor write
access to the hub. What comes back is a git bundle, a plain file: nothing in it runs. It is
verified against the hub, must carry exactly the task's branch, must descend from the task's base,
and its commits land on `refs/heads/<branch>` in the hub. The handoff's git fields are then
measured from the hub, whatever the sandbox's result.json claims.
"""

from __future__ import annotations

import os
from pathlib import Path

from agentswarm.agent.contract import GitMeasure
from agentswarm.git.refs import branch_ref, is_ancestor
from agentswarm.git.repo import GitError, open_repo, run_git

MAX_BUNDLE_BYTES = 200 * 1024 * 1024


def clone_for_sandbox(hub: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """A clone of the hub at dest that borrows the hub's objects (`--shared`), with no checkout yet."""
    proc = run_git("clone", "--quiet", "--shared", "--no-checkout", "--", os.fspath(hub), os.fspath(dest))
    if proc.returncode != 0:
        raise GitError(f"cannot prepare the sandbox's repository from {hub}: {proc.stderr.strip()}")


def bundle_of_branches(hub: str | os.PathLike[str], dest: Path) -> Path:
    """Every branch of the hub (main, and the swarm branches a conflict task may need) as one bundle file."""
    repo = open_repo(hub)
    repo.out("bundle", "create", "--quiet", str(dest), "--branches")
    return dest


def import_bundle(hub: str | os.PathLike[str], bundle: Path, branch: str, base: str) -> str:
    """Fetch the branch a sandbox bundled into the hub's refs/heads/<branch>; returns its head commit."""
    ref = branch_ref(branch)
    if bundle.stat().st_size > MAX_BUNDLE_BYTES:
        raise GitError(f"the bundle is larger than {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB")
    repo = open_repo(hub)
    check = repo.run("bundle", "verify", "--quiet", str(bundle))
    if check.returncode != 0:
        raise GitError(f"the bundle does not apply to the hub: {check.stderr.strip()[:500]}")
    heads = [line.split(" ", 1) for line in repo.out("bundle", "list-heads", str(bundle)).splitlines() if line]
    if [name for _, name in heads] != [ref]:
        raise GitError(f"the bundle must carry exactly {ref}, it carries {[name for _, name in heads][:5]}")
    head = heads[0][0]
    repo.out("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", str(bundle), f"+{ref}:{ref}")
    if not is_ancestor(repo, base, head):
        raise GitError(f"the bundled branch does not descend from the task's base {base[:12]}")
    return head


def measure(hub: str | os.PathLike[str], base: str, head: str) -> GitMeasure:
    """Commits (oldest first), files and line counts of base..head, read from the hub."""
    repo = open_repo(hub)
    commits = repo.out("rev-list", "--reverse", f"{base}..{head}", "--").split()
    raw = repo.run("diff-tree", "-r", "--numstat", "-z", "--no-renames", base, head, "--")
    if raw.returncode != 0:
        raise GitError(f"cannot measure {base[:12]}..{head[:12]}: {raw.stderr.strip()}")
    return GitMeasure.from_numstat(commits, head, raw.stdout.decode("utf-8", "surrogateescape"))
