"""Ref and plumbing helpers on top of the layer's handles (`agentswarm.git.repo`).

Invariants: every call goes through `open_repo(...)`, so it runs with the layer's minimal
environment, hooks off and an explicit GIT_DIR. `main` moves only by compare-and-swap
(`update_ref_cas`: `update-ref REF NEW OLD`), branches are deleted only by compare-and-swap,
and revisions that look like options are refused before they reach git.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from agentswarm.git.repo import ZERO_SHA, GitError, SwarmRepo, open_repo

RepoLike = str | os.PathLike[str] | SwarmRepo
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)|^-|^/|/$|\.$")


def branch_ref(branch: str) -> str:
    """`swarm/x` -> `refs/heads/swarm/x`; full `refs/...` names are kept; bad names raise ValueError."""
    if not isinstance(branch, str) or not branch.strip():
        raise ValueError(f"branch name must be a non-empty string, got {branch!r}")
    ref = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    if _BAD_REF.search(ref) or _BAD_REF.search(branch):
        raise ValueError(f"invalid branch name {branch!r}")
    return ref


def _check_rev(rev: str) -> None:
    if rev.startswith("-"):
        raise ValueError(f"invalid revision {rev!r}")


def rev_parse_many(repo: RepoLike, revs: Iterable[str]) -> dict[str, str | None]:
    """The commit each rev names (None for those naming none), in one `rev-parse` when all exist."""
    revs = list(revs)
    for rev in revs:
        _check_rev(rev)
    git = open_repo(repo)
    proc = git.run("rev-parse", *(f"{r}^{{commit}}" for r in revs))
    shas = proc.stdout.decode().split()
    if proc.returncode == 0 and len(shas) == len(revs):
        return dict(zip(revs, shas, strict=True))
    return {r: rev_parse(git, r) for r in revs}  # rare: find out which one is missing


def rev_parse(repo: RepoLike, rev: str) -> str | None:
    """The commit `rev` names, or None when it names no commit."""
    _check_rev(rev)
    proc = open_repo(repo).run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def is_ancestor(repo: RepoLike, ancestor: str, descendant: str) -> bool:
    """True when `ancestor` is reachable from `descendant` (a commit is its own ancestor)."""
    proc = open_repo(repo).run("merge-base", "--is-ancestor", ancestor, descendant)
    if proc.returncode in (0, 1):
        return proc.returncode == 0
    raise GitError(f"git merge-base --is-ancestor {ancestor} {descendant}: {proc.stderr.strip()}")


def merge_base(repo: RepoLike, a: str, b: str) -> str | None:
    """The best common ancestor of a and b, or None for unrelated histories."""
    proc = open_repo(repo).run("merge-base", a, b)
    if proc.returncode == 0:
        return proc.stdout.decode().strip()
    if proc.returncode == 1 and not proc.stderr.strip():
        return None
    raise GitError(f"git merge-base {a} {b}: {proc.stderr.strip()}")


def changed_files(repo: RepoLike, base: str, head: str) -> list[str]:
    """Paths that differ between the commits base and head (renames as delete + add)."""
    out = open_repo(repo).out("diff-tree", "-r", "-z", "--no-renames", "--name-only", base, head, "--")
    return [p for p in out.split("\0") if p]


def list_branches(repo: RepoLike, prefix: str = "refs/heads/swarm/") -> dict[str, str]:
    """Every ref under prefix and the commit it points at."""
    out = open_repo(repo).out("for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split(" ", 1) for line in out.splitlines())


def update_ref_cas(repo: RepoLike, ref: str, new: str, old: str | None) -> bool:
    """Move ref to new only if it still points at old (None: only if it does not exist); False if not."""
    proc = open_repo(repo).run("update-ref", "--no-deref", ref, new, old or ZERO_SHA)
    return proc.returncode == 0


def delete_branch(repo: RepoLike, branch: str, expected_sha: str | None = None) -> bool:
    """Delete a branch (only if it still points at expected_sha, when given); False if nothing was deleted."""
    ref = branch_ref(branch)
    git = open_repo(repo)
    current = rev_parse(git, ref)
    if current is None or (expected_sha is not None and current != expected_sha):
        return False
    return git.run("update-ref", "--no-deref", "-d", ref, current).returncode == 0


def write_commit_graph(repo: RepoLike, tips: Iterable[str]) -> bool:
    """Add the history of tips to the split commit-graph (fast ancestry walks); False if git declined."""
    data = "".join(f"{t}\n" for t in tips).encode()
    proc = open_repo(repo).run("commit-graph", "write", "--split", "--stdin-commits", "--no-progress", input=data)
    return proc.returncode == 0


def gc_auto(repo: RepoLike, timeout_s: float = 600) -> bool:
    """`git gc --auto`: plumbing never triggers housekeeping, so loose objects would pile up; False if it failed."""
    git = open_repo(repo)
    status, _, _ = git.git.execute(["git", "gc", "--auto", "--quiet"], with_extended_output=True,
                                   with_exceptions=False, kill_after_timeout=timeout_s)
    return status == 0


def fetch_refs(repo: RepoLike, remote: str, refs: Iterable[str], *, force: bool = True) -> None:
    """Copy refs from remote into the same names here (forced: the remote is the truth)."""
    specs = [f"{'+' if force else ''}{r}:{r}" for r in refs]
    open_repo(repo).out("fetch", "--quiet", "--no-tags", remote, *specs)


def push_ref(repo: RepoLike, remote: str, ref: str) -> None:
    """Push ref to the same name on remote, fast-forward only."""
    open_repo(repo).out("push", "--quiet", remote, f"{ref}:{ref}")
