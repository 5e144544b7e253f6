"""The hub: the bare git repository every agent clones and pushes its `swarm/<task-id>` branch to.

Only the merge queue moves `main`, with `git update-ref refs/heads/main NEW OLD` run on the
hub itself; that bypasses hooks, while every push goes through the `pre-receive` hook
installed here, which refuses `main` and anything outside `refs/heads/swarm/`.

Invariants: every git call here goes through the layer (`agentswarm.git.repo`): minimal
environment, hooks off (`core.hooksPath=/dev/null` for our own calls only; the hub's config
keeps no hooksPath so agents' pushes meet the pre-receive hook), explicit GIT_DIR.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from agentswarm.errors import SwarmError
from agentswarm.git.refs import rev_parse
from agentswarm.git.repo import GitError, SwarmRepo, init_bare, open_repo, run_git

EXCLUDED_DIRS = frozenset({".git", "node_modules", "dist"})
BRANCH_PREFIX = "refs/heads/swarm/"
OWN_HOOK_FILES = frozenset({"pre-receive", ".pre-receive.tmp"})
_IDENTITY = {"GIT_AUTHOR_NAME": "AgentSwarm", "GIT_AUTHOR_EMAIL": "agentswarm@localhost",
             "GIT_COMMITTER_NAME": "AgentSwarm", "GIT_COMMITTER_EMAIL": "agentswarm@localhost"}

PRE_RECEIVE = """#!/bin/sh
# Installed by agentswarm.git.hub: agents push only their own swarm/<task-id> branch.
# main moves only through the merge queue (git update-ref on the hub, which runs no hook).
status=0
while read -r old new ref; do
    case "$ref" in
        refs/heads/main)
            echo "agentswarm hub: refusing push to $ref: main is updated only by the merge queue" >&2
            status=1 ;;
        refs/heads/swarm/?*)
            case "$new" in
                *[!0]*) ;;
                *)  echo "agentswarm hub: refusing to delete $ref: branches are removed only by the merge queue" >&2
                    status=1 ;;
            esac ;;
        *)
            echo "agentswarm hub: refusing push to $ref: only swarm/<task-id> branches may be pushed" >&2
            status=1 ;;
    esac
done
exit $status
"""


class HubError(SwarmError):
    """The hub repository could not be created or read."""


class HubTampered(HubError):
    """The hub's hooks are not the ones agentswarm installed (someone planted or redirected hooks)."""


def _git(repo: SwarmRepo, *args: str, env: dict[str, str] | None = None, data: bytes | None = None) -> str:
    proc = repo.run(*args, input=data, env={**_IDENTITY, **(env or {})})
    if proc.returncode != 0:
        raise HubError(f"git {' '.join(args[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout.decode().strip()


def main_sha(hub_path: Path) -> str | None:
    """The commit `main` points at in the hub, or None if it has none (or there is no hub). Thread-safe."""
    try:
        return rev_parse(hub_path, "refs/heads/main")
    except GitError:
        return None


def _source_entries(repo: SwarmRepo, source_dir: Path) -> list[str]:
    """`update-index --index-info` lines for every file of source_dir, excluded directories left out."""
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(source_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = Path(dirpath) / name
            files.append((full.relative_to(source_dir).as_posix(), full))
    regular = [(rel, full) for rel, full in files if full.is_file() and not full.is_symlink()]
    paths = "\n".join(str(full) for _, full in regular).encode()
    shas = _git(repo, "hash-object", "-w", "--no-filters", "--stdin-paths", data=paths).split() if regular else []
    lines = [f"{'100755' if os.stat(full).st_mode & stat.S_IXUSR else '100644'} {sha}\t{rel}"
             for (rel, full), sha in zip(regular, shas, strict=True)]
    for rel, full in files:
        if full.is_symlink():
            sha = _git(repo, "hash-object", "-w", "--stdin", data=os.readlink(full).encode())
            lines.append(f"120000 {sha}\t{rel}")
    return lines


def create_hub(hub_path: Path, source_dir: Path) -> str:
    """Create the bare hub with the source's files as the first commit on main; an existing hub is kept."""
    hub_path, source_dir = Path(hub_path).resolve(), Path(source_dir).resolve()
    existing = main_sha(hub_path) if (hub_path / "HEAD").exists() else None
    if existing:
        found = foreign_hooks(hub_path)
        if found:
            raise HubTampered(f"{hub_path}: {', '.join(found)} not installed by agentswarm (an agent may have "
                              "planted it); inspect and remove it, then start again")
        install_hooks(hub_path)
        return existing
    if not source_dir.is_dir():
        raise HubError(f"source directory {source_dir} does not exist")
    hub_path.mkdir(parents=True, exist_ok=True)
    try:
        repo = open_repo(init_bare(hub_path))
    except GitError as exc:
        raise HubError(str(exc)) from exc
    with tempfile.TemporaryDirectory() as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        entries = _source_entries(repo, source_dir)
        if entries:
            _git(repo, "update-index", "--add", "--index-info", env=index, data="\n".join(entries).encode() + b"\n")
        tree = _git(repo, "write-tree", env=index)
    commit = _git(repo, "commit-tree", tree, "-m", f"Initial import of {source_dir.name}")
    try:
        _git(repo, "update-ref", "refs/heads/main", commit, "")  # only if main does not exist yet
    except HubError:
        pass  # another `init` won the race; its main stands
    install_hooks(hub_path)
    sha = main_sha(hub_path)
    if sha is None:
        raise HubError(f"{hub_path}: main is missing after creation")
    return sha


def install_hooks(hub_path: Path) -> Path:
    """Install (or refresh) the pre-receive hook that protects main; returns the hook's path."""
    hooks = Path(hub_path) / "hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / "pre-receive"
    tmp = hooks / ".pre-receive.tmp"
    tmp.write_text(PRE_RECEIVE)
    tmp.chmod(0o755)
    os.replace(tmp, hook)
    # An explicit hooksPath elsewhere would silently skip this hook.
    open_repo(hub_path).run("config", "--unset-all", "core.hooksPath")  # exit 5 when unset: fine
    return hook


def foreign_hooks(hub_path: Path) -> list[str]:
    """What in the hub would run code that agentswarm did not install: extra hooks, a hooks symlink, a hooksPath.

    Our own git calls never run hooks (the layer turns them off); these would run for agents' pushes.
    The pre-receive hook is ours and rewritten by install_hooks, so it is not listed here.
    """
    hooks = Path(hub_path) / "hooks"
    found = []
    if hooks.is_symlink() or (hooks.exists() and not hooks.is_dir()):
        found.append("hooks (not a plain directory)")
    elif hooks.is_dir():
        found += [f"hooks/{p.name}" for p in sorted(hooks.iterdir())
                  if p.name not in OWN_HOOK_FILES and not p.name.endswith(".sample")]
    configured = open_repo(hub_path).run("config", "--file", str(Path(hub_path) / "config"), "--get-all",
                                         "core.hooksPath")  # the hub's own file, not the layer's setting
    if configured.returncode == 0:
        found.append(f"core.hooksPath={configured.stdout.decode(errors='replace').strip()}")
    return found


def repair_hooks(hub_path: Path) -> list[str]:
    """Remove whatever foreign_hooks finds and reinstall pre-receive; returns what was removed."""
    found = foreign_hooks(hub_path)
    hooks = Path(hub_path) / "hooks"
    if hooks.is_symlink() or (hooks.exists() and not hooks.is_dir()):
        hooks.unlink()
    for name in found:
        path = Path(hub_path) / name
        if name.startswith("hooks/") and (path.is_file() or path.is_symlink()):
            path.unlink()
        elif name.startswith("hooks/") and path.is_dir():
            shutil.rmtree(path)
    install_hooks(hub_path)  # also unsets core.hooksPath
    return found


def hub_url(git_repo_url: str | None, hub_path: Path | str) -> str:
    """The hub's address (task.json's repo_url): GIT_REPO_URL when set, else the local hub's absolute path."""
    if git_repo_url and git_repo_url.strip():
        return git_repo_url.strip()
    return str(Path(hub_path).resolve())


def ensure_hub(git_repo_url: str | None, hub_path: Path, source_dir: Path) -> str:
    """What `agentswarm init` does: use GIT_REPO_URL as is, or create the local hub; returns the hub URL."""
    if not (git_repo_url and git_repo_url.strip()):
        create_hub(hub_path, source_dir)
    return hub_url(git_repo_url, hub_path)


def ensure_mirror(git_repo_url: str, hub_path: Path) -> str | None:
    """With a remote hub, keep a bare mirror at hub_path for the merge queue; returns main's sha."""
    if not (Path(hub_path) / "HEAD").exists():
        Path(hub_path).parent.mkdir(parents=True, exist_ok=True)
        proc = run_git("clone", "--quiet", "--bare", "--", git_repo_url, str(Path(hub_path).resolve()))
        if proc.returncode != 0:
            raise HubError(f"git clone {git_repo_url} failed: {proc.stderr.strip()}")
    return main_sha(Path(hub_path))


def prepare_hub(git_repo_url: str | None, hub_path: Path, source_dir: Path) -> tuple[str, str | None]:
    """The local hub (or the remote hub's local mirror), ready: (url agents use, main's sha)."""
    url = ensure_hub(git_repo_url, hub_path, source_dir)
    if git_repo_url and git_repo_url.strip():
        return url, ensure_mirror(git_repo_url.strip(), hub_path)
    return url, main_sha(Path(hub_path))
