"""Git helpers for the hub: plain `git` subprocesses against an explicit git directory.

Every command runs as `git --git-dir=<dir>` with the caller's GIT_DIR-like variables removed,
so a path that is not a repository never falls through to an enclosing one. Only the merge
queue moves `main`, and only by compare-and-swap (`update_ref_cas`).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from agentswarm.errors import SwarmError

MIN_GIT_VERSION = (2, 38)  # `git merge-tree --write-tree`
ZERO_SHA = "0" * 40
# Variables that would point git at another repository, index or object store than ours.
_REPO_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
             "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_QUARANTINE_PATH")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)|^-|^/|/$|\.$")


class GitError(SwarmError):
    """A git command failed unexpectedly, or a path is not a usable repository."""


class GitVersionError(GitError):
    """The installed git is older than MIN_GIT_VERSION."""


@functools.cache
def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
    return env


@functools.cache
def git_version() -> tuple[int, int, int]:
    """The installed git's version, e.g. (2, 39, 5)."""
    try:
        out = subprocess.run(["git", "version"], capture_output=True, text=True, env=_base_env()).stdout
    except FileNotFoundError as exc:
        raise GitVersionError("git is not installed (need git >= 2.38)") from exc
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    if not match:
        raise GitVersionError(f"cannot parse the output of `git version`: {out.strip()!r}")
    return int(match[1]), int(match[2]), int(match[3] or 0)


@functools.cache
def require_git() -> tuple[int, int, int]:
    """Raise GitVersionError unless git >= 2.38 is installed; checked once per process."""
    version = git_version()
    if version[:2] < MIN_GIT_VERSION:
        have = ".".join(map(str, version))
        raise GitVersionError(f"git {have} is too old: the merge queue needs git >= 2.38 "
                              "(`git merge-tree --write-tree`)")
    return version


def branch_ref(branch: str) -> str:
    """`swarm/x` -> `refs/heads/swarm/x`; full `refs/...` names are kept; bad names raise ValueError."""
    if not isinstance(branch, str) or not branch.strip():
        raise ValueError(f"branch name must be a non-empty string, got {branch!r}")
    ref = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
    if _BAD_REF.search(ref) or _BAD_REF.search(branch):
        raise ValueError(f"invalid branch name {branch!r}")
    return ref


class GitRepo:
    """One repository, addressed by its git directory (bare hub or `.git` of a clone)."""

    def __init__(self, git_dir: Path):
        self.git_dir = git_dir
        self._argv = ["git", f"--git-dir={git_dir}"]

    def run(self, *args: str, input: bytes | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run one git command; the caller reads the exit code."""
        full_env = {**_base_env(), **env} if env else _base_env()
        return subprocess.run([*self._argv, *args], input=input, capture_output=True, env=full_env)

    def out(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> str:
        """Run one git command that must succeed; its stripped stdout."""
        proc = self.run(*args, input=input, env=env)
        if proc.returncode != 0:
            raise GitError(f"git {' '.join(args[:2])} failed ({proc.returncode}) in {self.git_dir}: "
                           f"{proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout.decode().strip()


@functools.lru_cache(maxsize=64)
def _open(path: str) -> GitRepo:
    p = Path(path)
    if (p / "HEAD").is_file() and (p / "objects").is_dir() and (p / "refs").is_dir():
        return GitRepo(p)
    if not p.is_dir():
        raise GitError(f"{path}: no such directory")
    # A clone or worktree: ask git, but never let it climb into an enclosing repository.
    env = {**_base_env(), "GIT_CEILING_DIRECTORIES": str(p.parent)}
    proc = subprocess.run(["git", "-C", str(p), "rev-parse", "--absolute-git-dir"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise GitError(f"{path} is not a git repository")
    return GitRepo(Path(proc.stdout.strip()))


def open_repo(repo_path: str | os.PathLike[str] | GitRepo) -> GitRepo:
    """The repository at repo_path (bare or not); GitError if there is none."""
    if isinstance(repo_path, GitRepo):
        return repo_path
    return _open(os.path.abspath(repo_path))  # lru_cache keeps successes only


def init_bare(path: str | os.PathLike[str], initial_branch: str = "main") -> Path:
    """Create an empty bare repository at path (for hubs, tests and benchmarks)."""
    path = Path(path).resolve()
    proc = subprocess.run(["git", "init", "--bare", "--quiet", f"--initial-branch={initial_branch}", str(path)],
                          capture_output=True, text=True, env=_base_env())
    if proc.returncode != 0:
        raise GitError(f"git init {path} failed: {proc.stderr.strip()}")
    return path


def rev_parse_many(repo: str | os.PathLike[str] | GitRepo, revs: Iterable[str]) -> dict[str, str | None]:
    """The commit each rev names (None for those naming none), in one `rev-parse` when all exist."""
    revs = list(revs)
    for rev in revs:
        if rev.startswith("-"):
            raise ValueError(f"invalid revision {rev!r}")
    git = open_repo(repo)
    proc = git.run("rev-parse", *(f"{r}^{{commit}}" for r in revs))
    shas = proc.stdout.decode().split()
    if proc.returncode == 0 and len(shas) == len(revs):
        return dict(zip(revs, shas, strict=True))
    return {r: rev_parse(git, r) for r in revs}  # rare: find out which one is missing


def rev_parse(repo: str | os.PathLike[str] | GitRepo, rev: str) -> str | None:
    """The commit `rev` names, or None when it names no commit."""
    if rev.startswith("-"):
        raise ValueError(f"invalid revision {rev!r}")
    proc = open_repo(repo).run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def is_ancestor(repo: str | os.PathLike[str] | GitRepo, ancestor: str, descendant: str) -> bool:
    """True when `ancestor` is reachable from `descendant` (a commit is its own ancestor)."""
    proc = open_repo(repo).run("merge-base", "--is-ancestor", ancestor, descendant)
    if proc.returncode in (0, 1):
        return proc.returncode == 0
    raise GitError(f"git merge-base --is-ancestor {ancestor} {descendant}: {proc.stderr.decode().strip()}")


def merge_base(repo: str | os.PathLike[str] | GitRepo, a: str, b: str) -> str | None:
    """The best common ancestor of a and b, or None for unrelated histories."""
    proc = open_repo(repo).run("merge-base", a, b)
    if proc.returncode == 0:
        return proc.stdout.decode().strip()
    if proc.returncode == 1 and not proc.stderr.strip():
        return None
    raise GitError(f"git merge-base {a} {b}: {proc.stderr.decode().strip()}")


def changed_files(repo: str | os.PathLike[str] | GitRepo, base: str, head: str) -> list[str]:
    """Paths that differ between the commits base and head (renames as delete + add)."""
    out = open_repo(repo).out("diff-tree", "-r", "-z", "--no-renames", "--name-only", base, head, "--")
    return [p for p in out.split("\0") if p]


def list_branches(repo: str | os.PathLike[str] | GitRepo, prefix: str = "refs/heads/swarm/") -> dict[str, str]:
    """Every ref under prefix and the commit it points at."""
    out = open_repo(repo).out("for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split(" ", 1) for line in out.splitlines())


def update_ref_cas(repo: str | os.PathLike[str] | GitRepo, ref: str, new: str, old: str | None) -> bool:
    """Move ref to new only if it still points at old (None: only if it does not exist); False if not."""
    proc = open_repo(repo).run("update-ref", "--no-deref", ref, new, old or ZERO_SHA)
    return proc.returncode == 0


def delete_branch(repo: str | os.PathLike[str] | GitRepo, branch: str, expected_sha: str | None = None) -> bool:
    """Delete a branch (only if it still points at expected_sha, when given); False if nothing was deleted."""
    ref = branch_ref(branch)
    git = open_repo(repo)
    current = rev_parse(git, ref)
    if current is None or (expected_sha is not None and current != expected_sha):
        return False
    return git.run("update-ref", "--no-deref", "-d", ref, current).returncode == 0


def write_commit_graph(repo: str | os.PathLike[str] | GitRepo, tips: Iterable[str]) -> bool:
    """Add the history of tips to the split commit-graph (fast ancestry walks); False if git declined."""
    data = "".join(f"{t}\n" for t in tips).encode()
    proc = open_repo(repo).run("commit-graph", "write", "--split", "--stdin-commits", "--no-progress", input=data)
    return proc.returncode == 0


def fetch_refs(repo: str | os.PathLike[str] | GitRepo, remote: str, refs: Iterable[str], *,
               force: bool = True) -> None:
    """Copy refs from remote into the same names here (forced: the remote is the truth)."""
    specs = [f"{'+' if force else ''}{r}:{r}" for r in refs]
    open_repo(repo).out("fetch", "--quiet", "--no-tags", remote, *specs)


def push_ref(repo: str | os.PathLike[str] | GitRepo, remote: str, ref: str) -> None:
    """Push ref to the same name on remote, fast-forward only."""
    open_repo(repo).out("push", "--quiet", remote, f"{ref}:{ref}")
