"""Real bare hubs for the merge tests: commits written with plumbing, no working tree."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from agentswarm.git import repo as gitrepo

AGENT = ("Agent Smith", "smith@agents.local")


def git(hub: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
    """Run git in hub; must succeed; stripped stdout."""
    proc = subprocess.run(["git", f"--git-dir={hub}", *args], input=input, capture_output=True,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"git {args}: {proc.stderr.decode()}"
    return proc.stdout.decode().strip()


def commit(hub: Path, parent: str | None, files: dict[str, str | None], message: str = "change",
           author: tuple[str, str] = AGENT, date: str = "1700000000 +0000") -> str:
    """A commit on parent that sets (or, for None, deletes) the given files."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_AUTHOR_NAME": author[0],
               "GIT_AUTHOR_EMAIL": author[1], "GIT_AUTHOR_DATE": date,
               "GIT_COMMITTER_NAME": "Agent Runner", "GIT_COMMITTER_EMAIL": "runner@agents.local"}
        if parent:
            git(hub, "read-tree", parent, env=env)
        entries = []
        for path, content in files.items():
            if content is None:  # mode 0 removes the path from the index
                entries.append(f"0 {gitrepo.ZERO_SHA}\t{path}\n")
            else:
                blob = git(hub, "hash-object", "-w", "--stdin", input=content.encode())
                entries.append(f"100644 {blob}\t{path}\n")
        git(hub, "update-index", "--add", "--index-info", input="".join(entries).encode(), env=env)
        tree = git(hub, "write-tree", env=env)
        return git(hub, "commit-tree", tree, *(["-p", parent] if parent else []), "-m", message, env=env)


def set_ref(hub: Path, ref: str, sha: str) -> None:
    """Point ref at sha (test setup only: the code under test never forces a ref)."""
    git(hub, "update-ref", ref if ref.startswith("refs/") else f"refs/heads/{ref}", sha)


def branch(hub: Path, name: str, base: str, *changes: dict[str, str | None], **kw) -> list[str]:
    """A branch of one commit per change dict on top of base; its commits, oldest first."""
    shas, parent = [], base
    for i, files in enumerate(changes):
        parent = commit(hub, parent, files, message=kw.get("message", f"{name}: step {i + 1}"))
        shas.append(parent)
    set_ref(hub, name, parent)
    return shas


def new_hub(path: Path, files: dict[str, str]) -> tuple[Path, str]:
    """A bare hub whose main holds files; (hub, main sha)."""
    hub = gitrepo.init_bare(path)
    root = commit(hub, None, files, message="initial")
    set_ref(hub, "main", root)
    return hub, root


def read(hub: Path, rev: str, path: str) -> str | None:
    """A file's content at rev, or None if absent."""
    proc = subprocess.run(["git", f"--git-dir={hub}", "cat-file", "blob", f"{rev}:{path}"], capture_output=True)
    return proc.stdout.decode() if proc.returncode == 0 else None


def lines(n: int, tag: str = "line") -> str:
    """n numbered lines: room for edits that do not touch each other."""
    return "".join(f"{tag} {i}\n" for i in range(n))


def edit(text: str, index: int, new: str) -> str:
    """text with line `index` replaced."""
    out = text.splitlines(keepends=True)
    out[index] = new + "\n"
    return "".join(out)


def rev_list(hub: Path, *args: str) -> list[str]:
    """`git rev-list` output as a list."""
    out = git(hub, "rev-list", *args)
    return out.split() if out else []
