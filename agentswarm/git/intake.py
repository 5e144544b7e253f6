"""Work in and out of a sandbox without trusting it: a shared repository in, a bundle out, measured here.

Invariants: the orchestrator prepares the sandbox's repository (one that borrows the hub's objects
read-only through `alternates`, with the hub's branches as origin's), so the sandbox needs neither
the network nor write access to the hub. Preparing copies and links nothing of the hub: it reads
the hub's branches with one `for-each-ref` and writes the few files of a repository itself, so
pushes and imports landing in the hub at the same moment cannot break it (a local `git clone`
that copies the object directory races with their `tmp_objdir-incoming-*` quarantine). What
comes back is a git bundle, a plain file: nothing in it runs. It must carry exactly the task's
branch, apply to the hub (git checks its prerequisites as it fetches) and descend from the task's
base; its commits land on `refs/heads/<branch>` in the hub. The handoff's git fields are then
measured from the hub, whatever the sandbox's result.json claims.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from agentswarm.agent.contract import GitMeasure
from agentswarm.agent.gitwork import descendants
from agentswarm.git.refs import branch_ref
from agentswarm.git.repo import GitError, SwarmRepo, open_repo

MAX_BUNDLE_BYTES = 200 * 1024 * 1024
MAX_BUNDLE_HEADER = 1024 * 1024
PREPARE_ATTEMPTS = 3  # reading the hub's branches is retried within the attempt before the task fails
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BUNDLE_SIGNATURES = (b"# v2 git bundle\n", b"# v3 git bundle\n")


def _hub_branches(hub: Path, attempts: int = PREPARE_ATTEMPTS, pause_s: float = 0.2) -> list[tuple[str, str]]:
    """(sha, branch name) of every branch of the hub, read with one git process (retried)."""
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            proc = open_repo(hub).run("for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
        except GitError as exc:
            error = str(exc)
        else:
            if proc.returncode == 0:
                rows = [line.split(" ", 1) for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines()]
                return [(sha, ref[len("refs/heads/"):]) for sha, ref in rows]
            error = proc.stderr.strip()
        if attempt < attempts:
            time.sleep(pause_s * attempt)
    raise GitError(f"cannot prepare the sandbox's repository from {hub}: {error}")


def clone_for_sandbox(hub: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """At dest, what `git clone --shared --no-checkout hub dest` makes, written directly (see the module's docstring).

    The hub's objects are borrowed through `objects/info/alternates`, its branches become
    `refs/remotes/origin/*` and its default branch the local one; nothing is checked out yet.
    """
    hub_path = Path(hub).resolve()
    if not (hub_path / "objects").is_dir():
        raise GitError(f"cannot prepare the sandbox's repository from {hub_path}: not a git repository")
    branches = _hub_branches(hub_path)
    head = (hub_path / "HEAD").read_text(errors="replace").strip()
    default = head[len("ref: refs/heads/"):] if head.startswith("ref: refs/heads/") else "main"
    git_dir = Path(dest) / ".git"
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags", "refs/remotes/origin"):
        (git_dir / sub).mkdir(parents=True, exist_ok=True)
    (git_dir / "objects" / "info" / "alternates").write_text(f"{hub_path / 'objects'}\n")
    sha256 = any(len(sha) == 64 for sha, _ in branches)
    (git_dir / "config").write_text(
        f"[core]\n\trepositoryformatversion = {1 if sha256 else 0}\n\tfilemode = true\n\tbare = false\n"
        "\tlogallrefupdates = true\n" + ("[extensions]\n\tobjectformat = sha256\n" if sha256 else "")
        + f'[remote "origin"]\n\turl = "{hub_path}"\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n'
        + f'[branch "{default}"]\n\tremote = origin\n\tmerge = refs/heads/{default}\n')
    (git_dir / "packed-refs").write_text("".join(f"{sha} refs/remotes/origin/{name}\n" for sha, name in sorted(
        branches, key=lambda row: row[1].encode("utf-8", "surrogateescape"))))
    (git_dir / "refs" / "remotes" / "origin" / "HEAD").write_text(f"ref: refs/remotes/origin/{default}\n")
    (git_dir / "HEAD").write_text(f"ref: refs/heads/{default}\n")
    for sha, name in branches:
        if name == default:
            (git_dir / "refs" / "heads" / default).parent.mkdir(parents=True, exist_ok=True)
            (git_dir / "refs" / "heads" / default).write_text(f"{sha}\n")


def bundle_of_branches(hub: str | os.PathLike[str], dest: Path) -> Path:
    """Every branch of the hub (main, and the swarm branches a conflict task may need) as one bundle file."""
    repo = open_repo(hub)
    repo.out("bundle", "create", "--quiet", str(dest), "--branches")
    return dest


def bundle_heads(bundle: Path) -> list[tuple[str, str]]:
    """The (sha, ref) pairs a bundle file carries, read from its header (v2 or v3); GitError if it is not one."""
    with open(bundle, "rb") as f:
        header = f.read(MAX_BUNDLE_HEADER)
    if not header.startswith(_BUNDLE_SIGNATURES) or b"\n\n" not in header:
        raise GitError("the bundle does not apply to the hub: not a git bundle")
    heads = []
    for line in header.split(b"\n\n", 1)[0].split(b"\n")[1:]:
        text = line.decode("utf-8", "surrogateescape")
        if text.startswith(("@", "-")):  # a v3 capability, a prerequisite (git checks those as it fetches)
            continue
        sha, _, ref = text.partition(" ")
        if not _SHA.match(sha) or not ref:
            raise GitError(f"the bundle does not apply to the hub: unreadable header line {text[:100]!r}")
        heads.append((sha, ref))
    return heads


def _take(repo: SwarmRepo, bundle: Path, branch: str, base: str) -> tuple[str, list[str]]:
    """Fetch the bundled branch into the hub; its head and its commits since base (oldest first)."""
    ref = branch_ref(branch)
    if bundle.stat().st_size > MAX_BUNDLE_BYTES:
        raise GitError(f"the bundle is larger than {MAX_BUNDLE_BYTES // (1024 * 1024)} MiB")
    heads = bundle_heads(bundle)
    if [name for _, name in heads] != [ref]:
        raise GitError(f"the bundle must carry exactly {ref}, it carries {[name for _, name in heads][:5]}")
    head = heads[0][0]
    # No housekeeping after each import (the monitor runs `gc --auto` on the hub every tick).
    fetched = repo.run("-c", "maintenance.auto=false", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                       str(bundle), f"+{ref}:{ref}")
    if fetched.returncode != 0:
        raise GitError(f"the bundle does not apply to the hub: {fetched.stderr.strip()[:500]}")
    if not _SHA.match(base):
        base = repo.out("rev-parse", "--verify", "--end-of-options", f"{base}^{{commit}}")
    commits = descendants(repo.out("rev-list", "--reverse", "--parents", f"{base}..{head}", "--"), base, head)
    if commits is None:
        raise GitError(f"the bundled branch does not descend from the task's base {base[:12]}")
    return head, commits


def import_bundle(hub: str | os.PathLike[str], bundle: Path, branch: str, base: str) -> str:
    """Fetch the branch a sandbox bundled into the hub's refs/heads/<branch>; returns its head commit."""
    return _take(open_repo(hub), bundle, branch, base)[0]


def take_in(hub: str | os.PathLike[str], bundle: Path, branch: str, base: str) -> GitMeasure:
    """import_bundle, then measure, with three git commands: fetch, rev-list, diff-tree."""
    repo = open_repo(hub)
    head, commits = _take(repo, bundle, branch, base)
    return _numstat(repo, base, head, commits)


def measure(hub: str | os.PathLike[str], base: str, head: str) -> GitMeasure:
    """Commits (oldest first), files and line counts of base..head, read from the hub."""
    repo = open_repo(hub)
    commits = repo.out("rev-list", "--reverse", f"{base}..{head}", "--").split()
    return _numstat(repo, base, head, commits)


def _numstat(repo: SwarmRepo, base: str, head: str, commits: list[str]) -> GitMeasure:
    raw = repo.run("diff-tree", "-r", "--numstat", "-z", "--no-renames", base, head, "--")
    if raw.returncode != 0:
        raise GitError(f"cannot measure {base[:12]}..{head[:12]}: {raw.stderr.strip()}")
    return GitMeasure.from_numstat(commits, head, raw.stdout.decode("utf-8", "surrogateescape"))
