"""Landing one branch on `main` in a bare hub: fast-forward, rebase or merge commit. Pure git.

The only write to `main` is `update-ref main NEW OLD` (compare-and-swap), and NEW always has OLD
as an ancestor, so `main` only moves forward; a lost race is retried from the new `main`.

Rebasing without a working tree on git 2.39 (no `git replay`, no `merge-tree --merge-base`):
a commit C with parent P is replayed onto N by `merge-tree --write-tree X C`, where X is N's
tree committed with P as its only parent, so merge-base(X, C) = P and the result is exactly
cherry-pick's three-way merge (base P, ours N, theirs C) by the same ort engine, renames
included. The throwaway X is needed only when P is itself a replayed commit (2nd+ commit of
a branch); when P is reachable from `main`, merge-base(N, C) is already P and C is merged
directly. This keeps one merge engine, no temporary index and no per-file `merge-file`.

Every command runs through the layer's handle (`SwarmRepo.run` -> `Repo.git.execute`, argument
lists, no kwargs transforms): minimal environment, hooks off, explicit GIT_DIR.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agentswarm.git import refs
from agentswarm.git.refs import delete_branch
from agentswarm.git.repo import GitError, SwarmRepo, open_repo, require_git

__all__ = ["MergeStrategy", "Landing", "MergeResult", "land_branch", "list_conflicting_files", "branch_changes",
           "BranchChanges", "delete_branch", "MAX_CAS_ATTEMPTS", "DEFAULT_COMMITTER", "Stacked", "stack_on",
           "move_main", "tree_of", "changed_between", "revert_onto", "landed_range", "with_trailer"]

MAX_CAS_ATTEMPTS = 5
# Plumbing never triggers `gc --auto`, so without this every ancestry walk (rev-list, the
# merge base inside merge-tree) parses loose commits back to the fork point: 4x slower at 500.
COMMIT_GRAPH_EVERY = 50
_landings: dict[str, int] = {}
DEFAULT_COMMITTER = ("AgentSwarm Merge Queue", "merge-queue@agentswarm.local")
_SHA = re.compile(r"[0-9a-f]{7,64}")
_FIELDS = "%H%x00%T%x00%P%x00%an%x00%ae%x00%ad%x00%B%x00"


class MergeStrategy(StrEnum):
    FAST_FORWARD = "fast-forward"
    REBASE = "rebase"
    MERGE_COMMIT = "merge-commit"


class Landing(StrEnum):
    """How one landing attempt ended; only `merged` moved main."""

    MERGED = "merged"
    ALREADY_MERGED = "already_merged"  # nothing of the branch was missing from main: a successful no-op
    CONFLICT = "conflict"
    FAILED = "failed"


@dataclass
class MergeResult:
    """What one merge attempt did; `main` moved only when status is "merged"."""

    status: Landing
    branch: str
    main_before: str
    main_after: str | None
    conflict_files: list[str] = field(default_factory=list)
    commits_landed: list[str] = field(default_factory=list)  # main_before..main_after, oldest first
    error: str | None = None
    duration_ms: float = 0.0
    attempts: int = 1  # reads of main: more than one means a compare-and-swap was lost and retried


@dataclass(frozen=True)
class _Main:
    sha: str
    tree: str


@dataclass(frozen=True)
class _Commit:
    sha: str
    tree: str
    parents: tuple[str, ...]
    author: tuple[str, str, str]  # name, email, raw date
    message: bytes


@dataclass
class _Outcome:
    status: Landing
    new_head: str | None = None
    landed: list[str] = field(default_factory=list)
    conflict_files: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class BranchChanges:
    """What a conflict-resolution task needs to know about a branch against main."""

    main: str
    head: str
    merge_base: str | None
    commits: list[str]  # main..head, oldest first
    files: list[str]  # changed between merge_base and head
    conflict_files: list[str]  # paths that conflict when head is merged into main now


def _range(git: SwarmRepo, main: str, head: str) -> tuple[_Main, list[_Commit]]:
    """main with its tree, and the commits in main..head oldest first, from one `rev-list`."""
    # `head ^main^@ main` is main..head plus main itself: main's tree without reading the ref again.
    out = git.run("rev-list", "--reverse", "--topo-order", "--no-commit-header", "--date=raw",
                  f"--format={_FIELDS}", head, f"^{main}^@", main, "--")
    if out.returncode != 0:
        raise GitError(f"git rev-list {main}..{head}: {out.stderr.strip()}")
    parts = out.stdout.split(b"\0")
    main_tip, commits = None, []
    for i in range(0, len(parts) - 7, 7):
        sha, tree, parents, name, email, date, message = (parts[i].strip(), *parts[i + 1:i + 7])
        if sha.decode() == main:
            main_tip = _Main(main, tree.decode())
            continue
        author = (name.decode(errors="surrogateescape"), email.decode(errors="surrogateescape"), date.decode())
        commits.append(_Commit(sha.decode(), tree.decode(), tuple(parents.decode().split()), author, message))
    if main_tip is None:
        raise GitError(f"git rev-list {main}..{head} did not list {main}")
    return main_tip, commits


def _merge_trees(git: SwarmRepo, ours: str, theirs: str) -> tuple[str, list[str]]:
    """`merge-tree --write-tree`: (tree, []) when clean, (tree, conflicting paths) on conflict."""
    proc = git.run("merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", ours, theirs)
    fields = proc.stdout.decode(errors="surrogateescape").split("\0")
    if proc.returncode == 0:
        return fields[0], []
    if proc.returncode == 1:
        files = sorted({f for f in fields[1:] if f})
        if not files:  # a conflict must name its files; never read an empty list as clean
            raise GitError(f"git merge-tree {ours} {theirs} reported a conflict without files")
        return fields[0], files
    raise GitError(f"git merge-tree {ours} {theirs} failed ({proc.returncode}): "
                   f"{proc.stderr.strip()}")


def _commit_tree(git: SwarmRepo, tree: str, parents: list[str], message: bytes,
                 author: tuple[str, str, str] | None, committer: tuple[str, str]) -> str:
    env = {"GIT_COMMITTER_NAME": committer[0], "GIT_COMMITTER_EMAIL": committer[1]}
    name, email, date = author or (committer[0], committer[1], "")
    env.update(GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email)
    if date:
        env["GIT_AUTHOR_DATE"] = "@" + date
    args = ["commit-tree", tree]
    for p in parents:
        args += ["-p", p]
    return git.out(*args, "-F", "-", input=message, env=env)


TRAILER = b"Swarm-Task"


def with_trailer(message: bytes, branch: str) -> bytes:
    """The message with a `Swarm-Task: <id>` trailer naming the task of a `swarm/<id>` branch (once)."""
    task_id = branch.removeprefix("refs/heads/").removeprefix("swarm/")
    if not branch.removeprefix("refs/heads/").startswith("swarm/") or not task_id:
        return message
    line = TRAILER + b": " + task_id.encode()
    if line in message.splitlines():
        return message
    body = message.rstrip(b"\n")
    last = body.rsplit(b"\n\n", 1)[-1]
    in_trailers = b"\n\n" in body and all(b": " in ln for ln in last.splitlines())  # a trailer block ends it
    return body + (b"\n" if in_trailers else b"\n\n") + line + b"\n"


def _replay(git: SwarmRepo, main: _Main, commits: list[_Commit], committer: tuple[str, str],
            branch: str = "") -> _Outcome:
    """Cherry-pick each non-merge commit onto main in order; merges are dropped as `git rebase` does."""
    in_range = {c.sha for c in commits}
    cur, cur_tree, landed = main.sha, main.tree, []
    for c in commits:
        if len(c.parents) != 1:
            if not c.parents:
                return _Outcome(Landing.FAILED, error=f"commit {c.sha} has no common history with main")
            continue
        parent = c.parents[0]
        # merge-base(cur, c) is `parent` unless parent was itself replayed: then pin it (see module doc).
        ours = _commit_tree(git, cur_tree, [parent], b"replay base\n", None, committer) \
            if parent in in_range else cur
        tree, conflicts = _merge_trees(git, ours, c.sha)
        if conflicts:
            return _Outcome(Landing.CONFLICT, conflict_files=conflicts,
                            error=f"commit {c.sha[:12]} conflicts with main in {len(conflicts)} file(s)")
        if tree == cur_tree:
            continue  # its change is already on main (a re-landing, or an empty commit)
        cur = _commit_tree(git, tree, [cur], with_trailer(c.message, branch), c.author, committer)
        cur_tree = tree
        landed.append(cur)
    if not landed:
        return _Outcome(Landing.ALREADY_MERGED)
    return _Outcome(Landing.MERGED, new_head=cur, landed=landed)


def _merge_commit(git: SwarmRepo, main: _Main, head: str, commits: list[_Commit], message: bytes,
                  committer: tuple[str, str]) -> _Outcome:
    tree, conflicts = _merge_trees(git, main.sha, head)
    if conflicts:
        return _Outcome(Landing.CONFLICT, conflict_files=conflicts,
                        error=f"branch conflicts with main in {len(conflicts)} file(s)")
    if tree == main.tree:
        return _Outcome(Landing.ALREADY_MERGED)
    merge = _commit_tree(git, tree, [main.sha, head], message, None, committer)
    return _Outcome(Landing.MERGED, new_head=merge, landed=[c.sha for c in commits] + [merge])


def _plan(git: SwarmRepo, strategy: MergeStrategy, main_sha: str, head: str, branch: str,
          message: str | None, committer: tuple[str, str]) -> _Outcome:
    """Build (but do not publish) the new main for this branch."""
    main, commits = _range(git, main_sha, head)
    if not commits:
        return _Outcome(Landing.ALREADY_MERGED)  # head is main or an ancestor of it
    if strategy is MergeStrategy.MERGE_COMMIT:
        text = message or f"Merge branch '{branch.removeprefix('refs/heads/')}'"
        return _merge_commit(git, main, head, commits, with_trailer(text.rstrip("\n").encode() + b"\n", branch),
                             committer)
    main_is_base = any(main.sha in c.parents for c in commits)
    linear = all(len(c.parents) == 1 for c in commits)
    if main_is_base and (strategy is MergeStrategy.FAST_FORWARD or linear):
        return _Outcome(Landing.MERGED, new_head=head, landed=[c.sha for c in commits])
    return _replay(git, main, commits, committer, branch)


def _after_landing(git: SwarmRepo, head: str) -> None:
    """Refresh the commit-graph on the first landing in this process and every COMMIT_GRAPH_EVERY after."""
    key = str(git.git_dir)
    n = _landings.get(key, 0)
    _landings[key] = n + 1
    if n % COMMIT_GRAPH_EVERY == 0:
        refs.write_commit_graph(git, [head])  # an optimisation: a refusal (lock held) is harmless


def land_branch(repo_path: str | os.PathLike[str], branch: str, strategy: MergeStrategy | str, *,
                main_ref: str = "refs/heads/main", message: str | None = None,
                committer: tuple[str, str] = DEFAULT_COMMITTER, head: str | None = None,
                before_cas: Callable[[str, str, list[str]], None] | None = None) -> MergeResult:
    """Land branch on main with strategy; expected failures come back as a result, never raised.

    With `head` (the commit the task's handoff recorded), exactly that commit lands, whatever the
    branch points at now: a branch moved by anyone after the handoff cannot change what lands.
    `before_cas(main, new_head, landed)` is called before each compare-and-swap (the merge queue writes its
    landing record there); an exception from it stops the landing with main untouched.
    """
    require_git()
    try:
        strategy = MergeStrategy(strategy)
    except ValueError:
        raise ValueError(f"unknown merge strategy {strategy!r}: use one of "
                         f"{', '.join(s.value for s in MergeStrategy)}") from None
    t0, seen = time.perf_counter(), list[str]()  # every value of main read, one per attempt

    def result(status: Landing, main_before: str = "", **kw: Any) -> MergeResult:
        return MergeResult(status=status, branch=branch, main_before=main_before, attempts=max(1, len(seen)),
                           duration_ms=(time.perf_counter() - t0) * 1000, **kw)

    try:
        ref, main_ref = refs.branch_ref(branch), refs.branch_ref(main_ref)
        git = open_repo(repo_path)
        pinned = _recorded_commit(git, head) if head is not None else None
    except (ValueError, GitError) as exc:
        return result(Landing.FAILED, main_after=None, error=str(exc))
    for attempt in range(MAX_CAS_ATTEMPTS):
        if attempt:  # lost a race: jitter so two unlocked mergers stop colliding in step
            time.sleep(random.uniform(0, 0.002 * 2 ** attempt))
        try:
            tips = refs.rev_parse_many(git, [main_ref] if pinned else [main_ref, ref])
            main, tip = tips[main_ref], pinned or tips.get(ref)
            if main is None:
                return result(Landing.FAILED, main_after=None, error=f"{main_ref} does not exist in {repo_path}")
            if tip is None:
                return result(Landing.FAILED, main, main_after=None, error=f"unknown branch {branch!r}")
            seen.append(main)
            out = _plan(git, strategy, main, tip, ref, message, committer)
            if out.status is not Landing.MERGED:
                after = main if out.status is Landing.ALREADY_MERGED else None
                return result(out.status, main, main_after=after, conflict_files=out.conflict_files,
                              error=out.error)
            if out.new_head is None:
                raise GitError(f"landing {branch!r} produced no new head")
            if before_cas is not None:
                before_cas(main, out.new_head, out.landed)
            if refs.update_ref_cas(git, main_ref, out.new_head, main):
                _after_landing(git, out.new_head)
                return result(Landing.MERGED, main, main_after=out.new_head, commits_landed=out.landed)
        except GitError as exc:
            return result(Landing.FAILED, seen[-1] if seen else "", main_after=None, error=str(exc))
    return result(Landing.FAILED, seen[0], main_after=None,
                  error=f"{main_ref} moved during each of {MAX_CAS_ATTEMPTS} attempts (last seen {seen[-1][:12]}); "
                        "nothing was landed")


@dataclass(frozen=True)
class Stacked:
    """One branch built on top of a commit (not published): the new tip, or why it could not be."""

    status: Landing  # MERGED (tip is new), ALREADY_MERGED (nothing to add: tip is the base), CONFLICT, FAILED
    tip: str | None
    landed: list[str] = field(default_factory=list)
    conflict_files: list[str] = field(default_factory=list)
    error: str | None = None


def stack_on(repo_path: str | os.PathLike[str], base: str, head: str, strategy: MergeStrategy | str, *,
             branch: str, message: str | None = None, committer: tuple[str, str] = DEFAULT_COMMITTER) -> Stacked:
    """Build head onto base with the strategy, as a landing would, without moving any ref.

    The merge queue stacks a batch this way (each branch on the previous one's tip) and moves
    main only to a tip its gate passed.
    """
    git = open_repo(repo_path)
    try:
        pinned = _recorded_commit(git, head)
        out = _plan(git, MergeStrategy(strategy), base, pinned, refs.branch_ref(branch), message, committer)
    except (ValueError, GitError) as exc:
        return Stacked(Landing.FAILED, None, error=str(exc))
    if out.status is Landing.MERGED:
        return Stacked(Landing.MERGED, out.new_head, out.landed)
    if out.status is Landing.ALREADY_MERGED:
        return Stacked(Landing.ALREADY_MERGED, base)
    return Stacked(out.status, None, conflict_files=out.conflict_files, error=out.error)


def revert_onto(repo_path: str | os.PathLike[str], onto: str, base: str, last: str, message: str, *,
                committer: tuple[str, str] = DEFAULT_COMMITTER) -> Stacked:
    """A commit on `onto` that undoes base..last (a stretch of main's history), as `git revert` of each would.

    Without a work tree, like the replay above: X is onto's tree and Y is base's tree, each committed
    with `last` as its only parent, so merge-base(X, Y) = last and `merge-tree X Y` is the three-way
    merge (base last, ours onto, theirs base) that a revert is. Nothing moves; MERGED with the new
    commit as tip, ALREADY_MERGED when onto no longer holds any of the change, CONFLICT with the files.
    """
    git = open_repo(repo_path)
    try:
        onto, base, last = (_recorded_commit(git, c) for c in (onto, base, last))
        onto_tree = tree_of(repo_path, onto)
        ours = _commit_tree(git, onto_tree, [last], b"revert: ours\n", None, committer)
        theirs = _commit_tree(git, tree_of(repo_path, base), [last], b"revert: theirs\n", None, committer)
        tree, conflicts = _merge_trees(git, ours, theirs)
        if conflicts:
            return Stacked(Landing.CONFLICT, None, conflict_files=conflicts,
                           error=f"reverting {last[:12]} conflicts with {onto[:12]} in {len(conflicts)} file(s)")
        if tree == onto_tree:
            return Stacked(Landing.ALREADY_MERGED, onto)
        tip = _commit_tree(git, tree, [onto], message.rstrip("\n").encode() + b"\n", None, committer)
    except (ValueError, GitError) as exc:
        return Stacked(Landing.FAILED, None, error=str(exc))
    return Stacked(Landing.MERGED, tip, [tip])


def landed_range(repo_path: str | os.PathLike[str], commits: list[str]) -> tuple[str, str] | None:
    """(base, last): the stretch of main's first-parent history a landing's commits make up, or None.

    `commits` are what one landing put on main, oldest first (a rebase's replayed commits, or a
    branch's commits and its merge commit); base is the first-parent ancestor just before them.
    """
    if not commits:
        return None
    landed, last = set(commits), commits[-1]
    out = open_repo(repo_path).run("rev-list", "--first-parent", f"--max-count={len(commits) + 1}", last, "--")
    if out.returncode != 0:
        return None
    for sha in out.stdout.decode().split():
        if sha not in landed:
            return sha, last
    return None  # the landing reaches back to the root commit: nothing to revert to


def move_main(repo_path: str | os.PathLike[str], new: str, old: str, main_ref: str = "refs/heads/main") -> bool:
    """Compare-and-swap main from old to new (new must descend from old); False if main was not old."""
    git = open_repo(repo_path)
    if not refs.is_ancestor(git, old, new):
        raise GitError(f"refusing to move {main_ref} to {new[:12]}: it does not descend from {old[:12]}")
    if not refs.update_ref_cas(git, refs.branch_ref(main_ref), new, old):
        return False
    _after_landing(git, new)
    return True


def tree_of(repo_path: str | os.PathLike[str], commit: str) -> str:
    """The tree id of a commit."""
    return open_repo(repo_path).out("rev-parse", f"{commit}^{{tree}}")


def changed_between(repo_path: str | os.PathLike[str], old: str, new: str) -> list[str]:
    """Paths that differ between two commits and still exist in the newer one."""
    out = open_repo(repo_path).run("diff-tree", "-r", "--name-only", "--no-renames", "--diff-filter=d", "-z",
                                   old, new, "--")
    if out.returncode != 0:
        raise GitError(f"cannot diff {old[:12]}..{new[:12]}: {out.stderr.strip()}")
    return sorted(p for p in out.stdout.decode("utf-8", "surrogateescape").split("\0") if p)


def _recorded_commit(git: SwarmRepo, head: str) -> str:
    """The full sha of a recorded head, which must be a commit in this repository (ValueError/GitError if not)."""
    if not _SHA.fullmatch(head):
        raise ValueError(f"recorded head {head!r} is not a commit id")
    sha = refs.rev_parse(git, head)
    if sha is None:
        raise GitError(f"recorded head {head[:12]} is not in {git.git_dir}: the branch was never pushed, or was "
                       "replaced before its objects arrived")
    return sha


def _tips(repo_path: str | os.PathLike[str], branch: str, main_ref: str) -> tuple[SwarmRepo, str, str]:
    git, ref = open_repo(repo_path), refs.branch_ref(branch)
    tips = refs.rev_parse_many(git, [main_ref, ref])
    main, head = tips[main_ref], tips[ref]
    if main is None or head is None:
        raise GitError(f"{main_ref if main is None else branch} does not exist in {repo_path}")
    return git, main, head


def list_conflicting_files(repo_path: str | os.PathLike[str], branch: str,
                           main_ref: str = "refs/heads/main") -> list[str]:
    """Paths that conflict if branch's head were merged into main now ([] when it merges cleanly)."""
    git, main, head = _tips(repo_path, branch, main_ref)
    return _merge_trees(git, main, head)[1]


def branch_changes(repo_path: str | os.PathLike[str], branch: str,
                   main_ref: str = "refs/heads/main") -> BranchChanges:
    """Merge base, commits, changed files and current conflicts of branch against main."""
    git, main, head = _tips(repo_path, branch, main_ref)
    base = refs.merge_base(git, main, head)
    files = refs.changed_files(git, base, head) if base else []
    conflicts = _merge_trees(git, main, head)[1] if base else []
    return BranchChanges(main, head, base, [c.sha for c in _range(git, main, head)[1]], files, conflicts)
