"""The state of `main` in the hub, read with git plumbing (no worktree): file tree and recent commits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agentswarm.git.repo import GitError, open_repo

TREE_CAP = 400
COMMITS = 20


@dataclass
class MainState:
    """What the planner sees of main: its sha, a capped file list and the latest commits."""

    sha: str | None = None
    files: list[str] = field(default_factory=list)
    total_files: int = 0
    commits: list[str] = field(default_factory=list)

    def file_tree(self) -> str:
        """The file list as text, with a note when it was capped."""
        if not self.files:
            return "(no files on main yet)"
        more = self.total_files - len(self.files)
        return "\n".join(self.files) + (f"\n... and {more} more files" if more > 0 else "")

    def recent_commits(self) -> str:
        """The commits as text, newest first."""
        return "\n".join(self.commits) if self.commits else "(no commits yet)"


def read_main(hub_path: Path | str, *, tree_cap: int = TREE_CAP, commits: int = COMMITS) -> MainState:
    """Main's sha, file tree (at most tree_cap paths) and last commits; empty when the hub has no main."""
    try:
        repo = open_repo(hub_path)
    except GitError:
        return MainState()
    sha = repo.run("rev-parse", "--verify", "-q", "refs/heads/main^{commit}")
    if sha.returncode != 0:
        return MainState()
    head = sha.stdout.decode().strip()
    tree = repo.run("ls-tree", "-r", "--name-only", "-z", head)
    names = [n for n in tree.stdout.decode(errors="replace").split("\0") if n] if tree.returncode == 0 else []
    log = repo.run("log", "-n", str(commits), "--format=%h %ad %s", "--date=short", head)
    lines = log.stdout.decode(errors="replace").splitlines() if log.returncode == 0 else []
    return MainState(sha=head, files=names[:tree_cap], total_files=len(names), commits=lines)
